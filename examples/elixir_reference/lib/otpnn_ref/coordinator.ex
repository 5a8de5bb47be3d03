defmodule OtpnnRef.Coordinator do
  @moduledoc """
  Parameters and optimizer state; runs synchronous data-parallel SGD over micro-shards.

  A step's batch (from the exported order) is cut into micro-shards of the config's size,
  whatever the number of workers; each live worker gets a contiguous run of shards in one
  message. Results are keyed by (step, shard), so a redone shard or a late result is dropped
  when already present. Workers are monitored: the DOWN of one puts its unfinished shards back
  in the queue, given to the live workers at once (or to the first worker that comes up). A
  restarted worker announces itself with `worker_up`; work is tracked by pid, the incarnation,
  never by index. When all shards are in, they are added in shard order and SGD is applied at
  the step's exported learning rate (otpnn's schedule, as data).
  """
  use GenServer

  alias OtpnnRef.{Fault, Loader, MLP, Report}

  def start_link(job), do: GenServer.start_link(__MODULE__, job, name: __MODULE__)

  @doc "Called by a worker from its init: it is ready for work."
  def worker_up(index, pid), do: GenServer.cast(__MODULE__, {:worker_up, index, pid})

  # Same reason as in the Worker: the reduction and update rebuild all parameters every step.
  @min_heap_words 4_000_000

  @impl true
  def init(job) do
    Process.flag(:min_heap_size, @min_heap_words)

    for {_, pid, _, _} <- DynamicSupervisor.which_children(OtpnnRef.WorkerSup),
        do: DynamicSupervisor.terminate_child(OtpnnRef.WorkerSup, pid)

    cfg = job.manifest["config"]

    for i <- 0..(job.workers - 1),
        do:
          {:ok, _} =
            DynamicSupervisor.start_child(
              OtpnnRef.WorkerSup,
              {OtpnnRef.Worker, {i, cfg["activation"]}}
            )

    {:ok,
     %{
       job: job,
       cfg: cfg,
       params: job.params,
       velocity: nil,
       workers: %{},
       known: MapSet.new(),
       started: false,
       epoch: 0,
       batches: [],
       step: 0,
       shards_before: 0,
       shards: %{},
       batch_len: 0,
       inflight: %{},
       queue: [],
       done: %{},
       loss: 0.0,
       correct: 0,
       t_epoch: 0,
       t_start: System.monotonic_time(),
       lost_at: nil,
       faults: job.faults,
       history: [],
       events: [],
       restarts: 0
     }}
  end

  @impl true
  def handle_cast({:worker_up, index, pid}, s) do
    Process.monitor(pid)
    restarted = MapSet.member?(s.known, index)

    s = %{
      s
      | workers: Map.put(s.workers, pid, index),
        known: MapSet.put(s.known, index),
        restarts: s.restarts + if(restarted, do: 1, else: 0)
    }

    s =
      if restarted,
        do: event(s, "restart", "worker-#{index}", "restarted by OtpnnRef.WorkerSup"),
        else: s

    cond do
      not s.started and map_size(s.workers) == s.job.workers ->
        {:noreply, start_epoch(%{s | started: true}, 1)}

      s.started ->
        {:noreply, dispatch(s)}

      true ->
        {:noreply, s}
    end
  end

  @impl true
  def handle_info({:shard_done, step, k, grad, loss, correct}, s) do
    if step == s.step and not Map.has_key?(s.done, k) do
      s = %{
        s
        | done: Map.put(s.done, k, {grad, loss, correct}),
          inflight: Map.delete(s.inflight, k)
      }

      {:noreply, if(map_size(s.done) == map_size(s.shards), do: finish_step(s), else: s)}
    else
      {:noreply, s}
    end
  end

  def handle_info({:DOWN, _ref, :process, pid, reason}, s) do
    case Map.pop(s.workers, pid) do
      {nil, _} ->
        {:noreply, s}

      {index, workers} ->
        lost = for {k, ^pid} <- s.inflight, do: k

        s = %{
          s
          | workers: workers,
            inflight: Map.drop(s.inflight, lost),
            queue: Enum.sort(s.queue ++ lost)
        }

        s = event(s, "worker_crash", "worker-#{index}", inspect(reason))

        s =
          if lost != [] and s.lost_at == nil, do: %{s | lost_at: System.monotonic_time()}, else: s

        {:noreply, dispatch(s)}
    end
  end

  defp start_epoch(s, epoch) do
    batches = Enum.chunk_every(Loader.epoch_order(epoch), s.cfg["batch_size"])

    next_step(%{
      s
      | epoch: epoch,
        batches: batches,
        loss: 0.0,
        correct: 0,
        t_epoch: System.monotonic_time()
    })
  end

  defp next_step(%{batches: []} = s), do: finish_epoch(s)

  defp next_step(%{batches: [batch | rest]} = s) do
    shards =
      batch
      |> Enum.chunk_every(s.cfg["shard_size"])
      |> Enum.with_index()
      |> Map.new(fn {idx, k} -> {k, idx} end)

    dispatch(%{
      s
      | batches: rest,
        step: s.step + 1,
        shards_before: s.shards_before + map_size(s.shards),
        shards: shards,
        batch_len: length(batch),
        queue: Enum.sort(Map.keys(shards)),
        done: %{},
        inflight: %{}
    })
  end

  # Give the queued shards to the live workers, one contiguous run each, in worker-index order.
  defp dispatch(%{queue: []} = s), do: s

  defp dispatch(s) do
    live = s.workers |> Enum.sort_by(&elem(&1, 1))

    if live == [] do
      s
    else
      runs = Enum.chunk_every(s.queue, ceil(length(s.queue) / length(live)))

      Enum.zip(live, runs)
      |> Enum.reduce(%{s | queue: []}, fn {{pid, index}, ks}, s -> send_run(s, pid, index, ks) end)
    end
  end

  defp send_run(s, pid, index, ks) do
    {items, s, kill} =
      Enum.reduce(ks, {[], s, nil}, fn k, {items, s, kill} ->
        {fault, s} = take_fault(s, k, index)

        case fault do
          %Fault{kind: :kill} -> {[{k, s.shards[k], nil} | items], s, fault}
          %Fault{kind: kind} -> {[{k, s.shards[k], kind} | items], s, kill}
          nil -> {[{k, s.shards[k], nil} | items], s, kill}
        end
      end)

    GenServer.cast(pid, {:work, s.step, s.params, Enum.reverse(items)})
    if kill, do: Process.exit(pid, :kill)
    %{s | inflight: Enum.reduce(ks, s.inflight, &Map.put(&2, &1, pid))}
  end

  defp take_fault(s, k, index) do
    g = s.shards_before + k + 1

    case Enum.split_with(s.faults, &Fault.due?(&1, g, s.step, index)) do
      {[f | others], rest} ->
        {f, event(%{s | faults: others ++ rest}, "fault_injected", "worker-#{index}", f.spec)}

      {[], _} ->
        {nil, s}
    end
  end

  defp finish_step(s) do
    ks = Enum.sort(Map.keys(s.done))
    grads = for k <- ks, do: elem(s.done[k], 0)
    loss = Enum.reduce(ks, s.loss, fn k, acc -> acc + elem(s.done[k], 1) end)
    correct = Enum.reduce(ks, s.correct, fn k, acc -> acc + elem(s.done[k], 2) end)

    lr = elem(s.job.rates, s.step - 1)

    {params, velocity} =
      MLP.sgd(s.params, s.velocity, MLP.reduce_in_order(grads), s.batch_len, lr, s.cfg)

    s = %{s | params: params, velocity: velocity, loss: loss, correct: correct, done: %{}}

    s =
      case s.lost_at do
        nil ->
          s

        t ->
          event(%{s | lost_at: nil}, "recovered", "coordinator", nil, %{
            recovery_seconds: seconds_since(t)
          })
      end

    next_step(s)
  end

  defp finish_epoch(s) do
    seconds = seconds_since(s.t_epoch)
    n = s.job.manifest["train"]["count"]
    {test_loss, test_acc} = evaluate(s)

    row = %{
      epoch: s.epoch,
      seconds: seconds,
      samples_per_second: n / seconds,
      train_loss: s.loss / n,
      train_accuracy: s.correct / n,
      test_loss: test_loss,
      test_accuracy: test_acc
    }

    IO.puts(
      :stderr,
      "epoch #{s.epoch}: train loss #{Float.round(row.train_loss, 4)}, test acc #{Float.round(test_acc, 4)}, #{Float.round(seconds, 2)} s"
    )

    s = %{s | history: s.history ++ [row]}

    if s.epoch == s.cfg["epochs"] do
      send(s.job.notify, {:otpnn_ref_done, Report.build(s)})
      s
    else
      start_epoch(s, s.epoch + 1)
    end
  end

  defp evaluate(s) do
    {images, labels} = Loader.test_set()

    samples =
      for i <- 0..(byte_size(labels) - 1),
          do: {MLP.inputs(binary_part(images, i * 784, 784)), :binary.at(labels, i)}

    MLP.evaluate(s.params, s.cfg["activation"], samples)
  end

  defp event(s, kind, actor, reason, extra \\ %{}) do
    e =
      Map.merge(
        %{
          kind: kind,
          actor: actor,
          step: s.step,
          reason: reason,
          time: System.os_time(:millisecond) / 1000
        },
        extra
      )

    %{s | events: s.events ++ [e]}
  end

  defp seconds_since(t),
    do: System.convert_time_unit(System.monotonic_time() - t, :native, :microsecond) / 1.0e6
end
