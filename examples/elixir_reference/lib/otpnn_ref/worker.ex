defmodule OtpnnRef.Worker do
  @moduledoc """
  Computes micro-shard gradients. One `{:work, step, params, shards}` cast carries a contiguous
  run of shards; each shard's result goes back to the Coordinator as its own message, so the
  shards finished before a crash are kept. A planned fault (`:crash` raises, `:exit` exits) fires
  before the shard it is attached to.
  """
  use GenServer, restart: :permanent

  alias OtpnnRef.{Coordinator, Loader, MLP}

  def start_link({index, activation}), do: GenServer.start_link(__MODULE__, {index, activation})

  # A shard's gradient is ~10^5 live floats rebuilt sample by sample; with the default small
  # heap the garbage collector copies it over and over. A 32 MB minimum heap halves shard time.
  @min_heap_words 4_000_000

  @impl true
  def init({index, activation}) do
    Process.flag(:min_heap_size, @min_heap_words)
    {images, labels} = Loader.train_set()
    Coordinator.worker_up(index, self())
    {:ok, %{index: index, activation: activation, images: images, labels: labels}}
  end

  @impl true
  def handle_cast({:work, step, params, shards}, s) do
    for {k, indices, fault} <- shards do
      fire(fault, s.index, step)
      samples = for i <- indices, do: sample(s, i)
      {grad, loss, correct} = MLP.shard_gradient(params, s.activation, samples)
      send(Coordinator, {:shard_done, step, k, grad, loss, correct})
    end

    {:noreply, s}
  end

  # Crash reports would print the whole message, parameters included: keep step and shard ids.
  def format_status(%{message: {:"$gen_cast", {:work, step, _params, shards}}} = status) do
    %{status | message: {:work, step, :params, for({k, _, fault} <- shards, do: {k, fault})}}
  end

  def format_status(status), do: status

  defp sample(s, i),
    do: {MLP.inputs(binary_part(s.images, i * 784, 784)), :binary.at(s.labels, i)}

  defp fire(nil, _, _), do: :ok
  defp fire(:crash, i, step), do: raise("injected crash in worker #{i} at step #{step}")
  defp fire(:exit, _, _), do: exit(:injected_exit)
end
