defmodule Mix.Tasks.OtpnnRef.Train do
  @moduledoc """
  Train from an `otpnn export-init` directory and write an otpnn-schema JSON report.

      mix otpnn_ref.train EXPORT_DIR --workers N --report PATH [--fault SPEC ...]

  Exit status 0 on success, 1 if the tree gave up, 2 on bad arguments or export files, 3 if
  planned faults never fired (the report's `faults.unfired` names them).
  """
  use Mix.Task

  alias OtpnnRef.{Export, Fault, JSON}

  @shortdoc "Train the MLP with the OTP tree from an otpnn export"

  @impl true
  def run(argv) do
    {opts, args, bad} =
      OptionParser.parse(argv, strict: [workers: :integer, report: :string, fault: :keep])

    with [dir] <- args,
         [] <- bad,
         n when is_integer(n) and n >= 1 <- Keyword.get(opts, :workers, 1) do
      Mix.Task.run("compile")
      job = job!(dir, n, opts)
      Application.put_env(:otpnn_ref, :job, job)
      {:ok, _} = Application.ensure_all_started(:otpnn_ref)
      ref = Process.monitor(Process.whereis(OtpnnRef.JobSupervisor))

      receive do
        {:otpnn_ref_done, report} ->
          if path = opts[:report], do: File.write!(path, [JSON.encode(report), "\n"])

          IO.puts(
            "done: test accuracy #{report.final.test_accuracy}, #{report.final.steps} steps, restarts #{report.restarts}"
          )

          Application.stop(:otpnn_ref)

          # As `otpnn train`: planned faults that never fired mean nothing was tested (exit 3).
          if report.faults.unfired != [] do
            IO.puts(
              :stderr,
              "otpnn_ref: ERROR: planned faults never fired: #{Enum.join(report.faults.unfired, ", ")}"
            )

            System.halt(3)
          end

        {:DOWN, ^ref, :process, _, reason} ->
          IO.puts(:stderr, "otpnn_ref: the tree gave up: #{inspect(reason)}")
          System.halt(1)
      end
    else
      _ ->
        usage_error(
          "usage: mix otpnn_ref.train EXPORT_DIR --workers N --report PATH [--fault SPEC ...]"
        )
    end
  end

  defp job!(dir, workers, opts) do
    faults = for {:fault, spec} <- opts, do: Fault.parse!(spec)
    manifest = Export.manifest!(dir)

    %{
      dir: dir,
      manifest: manifest,
      params: Export.init_params!(dir, manifest),
      rates: Export.rates!(dir, manifest),
      workers: workers,
      faults: faults,
      notify: self()
    }
  rescue
    e in [ArgumentError, File.Error, RuntimeError, MatchError] ->
      usage_error("otpnn_ref: #{Exception.message(e)}")
  end

  defp usage_error(message) do
    IO.puts(:stderr, message)
    System.halt(2)
  end
end
