defmodule OtpnnRef.Fault do
  @moduledoc """
  Planned worker faults, otpnn's grammar restricted to workers: `KIND:worker=I|any@shard=N|step=N`
  with KIND `crash` (the worker raises), `exit` (it exits with reason :injected_exit) or `kill`
  (the Coordinator sends it an untrappable `:kill` exit signal). Numbers count from 1; `shard=N`
  is the N-th micro-shard of the job, `step=N` the first shard of step N. A fault fires once,
  on the first dispatched shard at or after its point that goes to a matching worker.
  """

  @enforce_keys [:spec, :kind, :worker, :when, :at]
  defstruct [:spec, :kind, :worker, :when, :at]

  @type t :: %__MODULE__{}

  @doc "Parse one spec; raises ArgumentError naming the spec and the grammar."
  @spec parse!(String.t()) :: t()
  def parse!(spec) do
    with [kind, target, point] <- String.split(spec, [":", "@"]),
         true <- kind in ~w(crash exit kill),
         {:ok, worker} <- target(target),
         [w, n] when w in ~w(shard step) <- String.split(point, "="),
         {at, ""} when at >= 1 <- Integer.parse(n) do
      %__MODULE__{spec: spec, kind: String.to_atom(kind), worker: worker, when: w, at: at}
    else
      _ ->
        raise ArgumentError,
              "bad fault spec #{inspect(spec)}: expected (crash|exit|kill):worker=I|any@(shard|step)=N"
    end
  end

  defp target("worker=any"), do: {:ok, :any}

  defp target("worker=" <> i) do
    case Integer.parse(i) do
      {n, ""} when n >= 0 -> {:ok, n}
      _ -> :error
    end
  end

  defp target(_), do: :error

  @doc "Does the fault fire on global shard `g` (from 1) of step `step`, given to worker `w`?"
  @spec due?(t(), pos_integer(), pos_integer(), non_neg_integer()) :: boolean()
  def due?(f, g, step, w) do
    reached = if f.when == "shard", do: g >= f.at, else: step >= f.at
    reached and (f.worker == :any or f.worker == w)
  end
end
