defmodule OtpnnRef.Application do
  @moduledoc """
  The OTP application: starts one training job's tree from the `:job` application environment
  (set by `mix otpnn_ref.train`).

      OtpnnRef.JobSupervisor (rest_for_one)
      ├── OtpnnRef.Loader        dataset binaries and the epoch orders
      ├── OtpnnRef.WorkerSup     DynamicSupervisor of OtpnnRef.Worker (permanent)
      └── OtpnnRef.Coordinator   parameters, dispatch, in-order reduction, SGD, report
  """
  use Application

  @impl true
  def start(_type, _args) do
    job = Application.fetch_env!(:otpnn_ref, :job)

    children = [
      {OtpnnRef.Loader, job},
      {DynamicSupervisor, name: OtpnnRef.WorkerSup, strategy: :one_for_one},
      {OtpnnRef.Coordinator, job}
    ]

    Supervisor.start_link(children, strategy: :rest_for_one, name: OtpnnRef.JobSupervisor)
  end
end
