defmodule OtpnnRef.Report do
  @moduledoc """
  The run's report in otpnn's schema ("otpnn-report/1", see otpnn's README, "Report format"),
  with `system` "elixir-reference", so `otpnn compare` reads both alike.
  """

  alias OtpnnRef.MLP

  @doc "The report of a finished job from the Coordinator's state."
  @spec build(map()) :: map()
  def build(s) do
    job = s.job

    %{
      schema: "otpnn-report/1",
      system: "elixir-reference",
      config:
        Map.merge(job.manifest["config"], %{
          "workers" => job.workers,
          "dataset_name" => job.manifest["dataset_name"],
          "backend" => "beam",
          # The arithmetic actually done (the export's dtype only says how init was stored).
          "dtype" => "float64"
        }),
      environment: %{
        elixir: System.version(),
        otp: to_string(:erlang.system_info(:otp_release)),
        erts: to_string(:erlang.system_info(:version)),
        cores: :erlang.system_info(:logical_processors_available) |> cores(),
        schedulers: System.schedulers_online(),
        arithmetic: "float64 (Erlang floats), lists",
        workers: job.workers,
        backend: "beam"
      },
      epochs: s.history,
      restarts: s.restarts,
      events: s.events,
      # The Coordinator drops a fault from s.faults when it fires: what is left never did.
      faults: %{
        planned: Enum.map(job.faults, & &1.spec),
        unfired: Enum.map(s.faults, & &1.spec)
      },
      final: %{
        test_accuracy: List.last(s.history).test_accuracy,
        params_sha256: MLP.sha256_float32(s.params),
        params_sha256_note:
          "over the float64 parameters cast to float32 (otpnn's layout); equal to otpnn's only if every value rounds alike",
        steps: s.step,
        seconds:
          System.convert_time_unit(System.monotonic_time() - s.t_start, :native, :microsecond) /
            1.0e6
      }
    }
  end

  defp cores(:unknown), do: System.schedulers_online()
  defp cores(n), do: n
end
