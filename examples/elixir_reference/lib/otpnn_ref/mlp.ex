defmodule OtpnnRef.MLP do
  @moduledoc """
  The MLP in plain Elixir, float64 (Erlang floats), on lists: the same arithmetic as
  otpnn.model.mlp up to rounding (otpnn defaults to float32).

  A layer is `{w, b}` with `w` in otpnn's (in, out) layout: one list of `out` weights per INPUT
  unit. A layer's output is then the sum of `x_i * w_i` over the inputs, and the inputs that are
  exactly zero (blank pixels, ReLU-silenced units; most of them on MNIST) are skipped: adding
  0.0 changes nothing, and this orientation makes skipping them cost nothing (4x faster than
  one dot product per output unit). Gradients are SUMS over a shard's samples, so shard
  gradients add up to the batch's, as in otpnn.
  """

  @type layer :: {[[float()]], [float()]}
  @type params :: [layer()]

  @doc "A layer from otpnn's row-major (in, out) weights."
  @spec layer_from_row_major([float()], pos_integer(), [float()]) :: layer()
  def layer_from_row_major(w, fan_out, b), do: {Enum.chunk_every(w, fan_out), b}

  @doc "Parameters flattened in otpnn's layout: W (in, out) row-major, then b, per layer."
  @spec to_row_major(params()) :: [float()]
  def to_row_major(params), do: Enum.flat_map(params, fn {w, b} -> List.flatten(w) ++ b end)

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
      |> Enum.reduce({[x], length(params) - 1}, fn {{w, b}, k}, {[a | _] = acts, last} ->
        z = affine(w, b, a)
        {[if(k < last, do: activate(z, activation), else: z) | acts], last}
      end)

    acts
  end

  # (sum_i a_i * w_i) + b, as numpy's a @ W + b; zero inputs skipped.
  defp affine(w, b, a), do: zip_map(accumulate(w, a, List.duplicate(0.0, length(b))), b, &+/2)

  defp accumulate([], [], acc), do: acc
  defp accumulate([_ | ws], [x | xs], acc) when x == 0.0, do: accumulate(ws, xs, acc)
  defp accumulate([row | ws], [x | xs], acc), do: accumulate(ws, xs, axpy(x, row, acc))

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
    |> Enum.reduce({[], delta}, fn {{w, _b}, {gw, gb}, a_prev, k}, {done, d} ->
      g = {add_outer(gw, a_prev, d), zip_map(gb, d, &+/2)}
      {[g | done], if(k > 0, do: back(w, d, a_prev, activation))}
    end)
    |> elem(0)
  end

  # gw_i += a_i * d for every input unit i (skipped where a_i is 0).
  defp add_outer([], [], _d), do: []
  defp add_outer([row | rows], [a | as], d) when a == 0.0, do: [row | add_outer(rows, as, d)]
  defp add_outer([row | rows], [a | as], d), do: [axpy(a, d, row) | add_outer(rows, as, d)]

  # ys + s * xs, body-recursive (the hot loop).
  defp axpy(_s, [], []), do: []
  defp axpy(s, [x | xs], [y | ys]) when x == 0.0, do: [y | axpy(s, xs, ys)]
  defp axpy(s, [x | xs], [y | ys]), do: [y + s * x | axpy(s, xs, ys)]

  # delta of the layer below: (w_i . d) * activation'(a_i); ReLU-silenced units give 0.
  defp back(w, d, a_prev, activation) do
    Enum.zip_with(w, a_prev, fn
      _row, a when activation == "relu" and a == 0.0 -> 0.0
      row, a -> dot(d, row, 0.0) * derivative(a, activation)
    end)
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
      {Enum.zip_with(wp, wq, fn rp, rq -> zip_map(rp, rq, f) end), zip_map(bp, bq, f)}
    end)
  end

  defp zip_map([], [], _f), do: []
  defp zip_map([x | xs], [y | ys], f), do: [f.(x, y) | zip_map(xs, ys, f)]

  @doc "Shard gradients added strictly left to right in shard order (as otpnn's reduce_in_order)."
  @spec reduce_in_order([params()]) :: params()
  def reduce_in_order([g0 | rest]),
    do: Enum.reduce(rest, g0, fn g, acc -> map2(acc, g, &(&1 + &2)) end)

  @doc """
  SGD, PyTorch convention as otpnn.model.sgd: g = grad_sum / n + wd * p; v = m * v + g;
  p -= lr * v (without momentum p -= lr * g), at the step's rate `lr`. Returns {params, velocity}.
  """
  @spec sgd(params(), params() | nil, params(), pos_integer(), float(), map()) ::
          {params(), params() | nil}
  def sgd(params, velocity, grad_sum, n, lr, %{"momentum" => m, "weight_decay" => wd}) do
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
