defmodule OtpnnRef.MLP do
  @moduledoc """
  The MLP in plain Elixir, float64 (Erlang floats), on lists: the same arithmetic as
  otpnn.model.mlp up to rounding (otpnn defaults to float32).

  A layer is `{wt, b}`: `wt` holds one list per OUTPUT unit (the transpose of otpnn's (in, out)
  matrix), so a unit's pre-activation is one dot product with the input list. Gradients are
  SUMS over a shard's samples, so shard gradients add up to the batch's, as in otpnn. Terms that
  are exactly zero (blank pixels, ReLU-silenced units) are skipped: adding 0.0 changes nothing,
  and on MNIST it roughly halves the work.
  """

  @type layer :: {[[float()]], [float()]}
  @type params :: [layer()]

  @doc "A layer from otpnn's row-major (in, out) weights."
  @spec layer_from_row_major([float()], pos_integer(), pos_integer(), [float()]) :: layer()
  def layer_from_row_major(w, _fan_in, fan_out, b) do
    rows = Enum.chunk_every(w, fan_out)
    {Enum.zip_with(rows, & &1), b}
  end

  @doc "Parameters flattened in otpnn's layout: W (in, out) row-major, then b, per layer."
  @spec to_row_major(params()) :: [float()]
  def to_row_major(params) do
    Enum.flat_map(params, fn {wt, b} -> List.flatten(Enum.zip_with(wt, & &1)) ++ b end)
  end

  @doc "Pixels (a binary of bytes) as inputs x / 255."
  @spec inputs(binary()) :: [float()]
  def inputs(pixels), do: for(<<p <- pixels>>, do: p / 255)

  @doc """
  Summed gradient of a shard `[{x, label}]`: `{grads, loss_sum, correct}` under `params`.
  """
  @spec shard_gradient(params(), String.t(), [{[float()], non_neg_integer()}]) ::
          {params(), float(), non_neg_integer()}
  def shard_gradient(params, activation, samples) do
    Enum.reduce(samples, {zeros(params), 0.0, 0}, fn {x, y}, {acc, loss, correct} ->
      acts = forward(params, activation, x)
      {l, ok, delta} = softmax_xent(hd(acts), y)
      {backward(params, activation, tl(acts), delta, acc), loss + l, correct + ok}
    end)
  end

  @doc "Mean loss and accuracy over samples (evaluation)."
  @spec evaluate(params(), String.t(), [{[float()], non_neg_integer()}]) :: {float(), float()}
  def evaluate(params, activation, samples) do
    {loss, correct} =
      Enum.reduce(samples, {0.0, 0}, fn {x, y}, {loss, correct} ->
        {l, ok, _} = softmax_xent(hd(forward(params, activation, x)), y)
        {loss + l, correct + ok}
      end)

    n = max(length(samples), 1)
    {loss / n, correct / n}
  end

  # Activations, last layer first: [logits, h_{L-1}, ..., h_1, x].
  defp forward(params, activation, x) do
    {acts, _} =
      params
      |> Enum.with_index()
      |> Enum.reduce({[x], length(params) - 1}, fn {{wt, b}, k}, {[a | _] = acts, last} ->
        z = affine(wt, b, a)
        {[if(k < last, do: activate(z, activation), else: z) | acts], last}
      end)

    acts
  end

  defp affine(wt, b, a), do: Enum.zip_with(wt, b, fn row, bj -> dot(a, row, 0.0) + bj end)

  defp dot([], [], acc), do: acc
  defp dot([x | xs], [_ | ws], acc) when x == 0.0, do: dot(xs, ws, acc)
  defp dot([x | xs], [w | ws], acc), do: dot(xs, ws, acc + x * w)

  defp activate(z, "relu"), do: Enum.map(z, &max(&1, 0.0))
  defp activate(z, "sigmoid"), do: Enum.map(z, &sigmoid/1)

  # exp(-z) overflows to inf in numpy, giving 0; Erlang raises instead, so say 0 directly.
  defp sigmoid(z) when z < -709.0, do: 0.0
  defp sigmoid(z), do: 1.0 / (1.0 + :math.exp(-z))

  # Loss logsumexp(z) - z_y after subtracting the max (as otpnn); delta = softmax - onehot.
  defp softmax_xent(logits, y) do
    m = Enum.max(logits)
    shifted = Enum.map(logits, &(&1 - m))
    e = Enum.map(shifted, &:math.exp/1)
    total = Enum.sum(e)
    loss = :math.log(total) - Enum.at(shifted, y)
    argmax = Enum.find_index(logits, &(&1 == m))

    delta =
      e
      |> Enum.with_index()
      |> Enum.map(fn {p, j} -> p / total - if(j == y, do: 1.0, else: 0.0) end)

    {loss, if(argmax == y, do: 1, else: 0), delta}
  end

  # acts_below: [h_{L-1}, ..., x] (inputs of layers L-1 .. 0); acc: the gradient so far.
  defp backward(params, activation, acts_below, delta, acc) do
    last = length(params) - 1

    [Enum.reverse(params), Enum.reverse(acc), acts_below, last..0//-1]
    |> Enum.zip()
    |> Enum.reduce({[], delta}, fn {{wt, _b}, {gwt, gb}, a_prev, k}, {done, d} ->
      g = {add_outer(gwt, d, a_prev), Enum.zip_with(gb, d, &(&1 + &2))}
      {[g | done], if(k > 0, do: back(wt, d, a_prev, activation))}
    end)
    |> elem(0)
  end

  # gwt_j += d_j * a_prev for every output unit j (skipped where d_j is 0).
  defp add_outer(gwt, d, a_prev) do
    Enum.zip_with(gwt, d, fn row, dj -> if dj == 0.0, do: row, else: axpy(dj, a_prev, row) end)
  end

  defp axpy(s, xs, ys), do: Enum.zip_with(xs, ys, fn x, y -> y + s * x end)

  # delta of the layer below: (sum_j d_j * wt_j) * activation'(a_prev).
  defp back(wt, d, a_prev, activation) do
    sum =
      Enum.zip(wt, d)
      |> Enum.reduce(List.duplicate(0.0, length(a_prev)), fn {row, dj}, acc ->
        if dj == 0.0, do: acc, else: axpy(dj, row, acc)
      end)

    Enum.zip_with(sum, a_prev, fn s, a -> s * derivative(a, activation) end)
  end

  defp derivative(a, "relu"), do: if(a > 0.0, do: 1.0, else: 0.0)
  defp derivative(a, "sigmoid"), do: a * (1.0 - a)

  @doc "Zero gradients shaped like params."
  @spec zeros(params()) :: params()
  def zeros(params) do
    Enum.map(params, fn {wt, b} ->
      {Enum.map(wt, fn row -> List.duplicate(0.0, length(row)) end),
       List.duplicate(0.0, length(b))}
    end)
  end

  @doc "Element-wise f over two (or three) parameter-shaped structures."
  @spec map2(params(), params(), (float(), float() -> float())) :: params()
  def map2(p, q, f) do
    Enum.zip_with(p, q, fn {wp, bp}, {wq, bq} ->
      {Enum.zip_with(wp, wq, fn rp, rq -> Enum.zip_with(rp, rq, f) end), Enum.zip_with(bp, bq, f)}
    end)
  end

  @doc "Shard gradients added strictly left to right in shard order (as otpnn's reduce_in_order)."
  @spec reduce_in_order([params()]) :: params()
  def reduce_in_order([g0 | rest]),
    do: Enum.reduce(rest, g0, fn g, acc -> map2(acc, g, &(&1 + &2)) end)

  @doc """
  SGD, PyTorch convention as otpnn.model.sgd: g = grad_sum / n + wd * p; v = m * v + g;
  p -= lr * v (without momentum p -= lr * g). Returns {params, velocity}.
  """
  @spec sgd(params(), params() | nil, params(), pos_integer(), map()) ::
          {params(), params() | nil}
  def sgd(params, velocity, grad_sum, n, %{"lr" => lr, "momentum" => m, "weight_decay" => wd}) do
    g = map2(grad_sum, params, fn gs, p -> gs / n + wd * p end)

    if m > 0 do
      v = map2(velocity || zeros(params), g, fn v, gi -> m * v + gi end)
      {map2(params, v, fn p, vi -> p - lr * vi end), v}
    else
      {map2(params, g, fn p, gi -> p - lr * gi end), nil}
    end
  end

  @doc "SHA-256 (hex) over the parameters cast to float32 little-endian in otpnn's layout."
  @spec sha256_float32(params()) :: String.t()
  def sha256_float32(params) do
    bin = for x <- to_row_major(params), into: <<>>, do: <<x::float-32-little>>
    Base.encode16(:crypto.hash(:sha256, bin), case: :lower)
  end
end
