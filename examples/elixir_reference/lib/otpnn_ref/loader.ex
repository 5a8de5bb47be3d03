defmodule OtpnnRef.Loader do
  @moduledoc """
  Holds the dataset (pixel and label binaries, read once) and the exported epoch orders.
  Workers get the training binaries once at start: large binaries are shared between processes,
  so messages never carry pixels.
  """
  use GenServer

  alias OtpnnRef.{Export, IDX}

  def start_link(job), do: GenServer.start_link(__MODULE__, job, name: __MODULE__)

  @doc "{train images, train labels} binaries (784 bytes per image, 1 byte per label)."
  def train_set, do: GenServer.call(__MODULE__, :train_set, :infinity)
  @doc "{test images, test labels} binaries."
  def test_set, do: GenServer.call(__MODULE__, :test_set, :infinity)
  @doc "The sample indices of `epoch` (from 1), in order."
  def epoch_order(epoch), do: GenServer.call(__MODULE__, {:order, epoch}, :infinity)

  @impl true
  def init(%{dir: dir, manifest: m}) do
    {:ok,
     %{
       train: split!(m["train"]),
       test: split!(m["test"]),
       order: Export.order!(dir, m)
     }}
  end

  defp split!(%{"images" => images, "labels" => labels, "count" => n}) do
    {pixels, 784} = IDX.read!(images, 3, n)
    {labs, 1} = IDX.read!(labels, 1, n)
    {pixels, labs}
  end

  @impl true
  def handle_call(:train_set, _from, s), do: {:reply, s.train, s}
  def handle_call(:test_set, _from, s), do: {:reply, s.test, s}
  def handle_call({:order, e}, _from, s), do: {:reply, Map.fetch!(s.order, e), s}
end
