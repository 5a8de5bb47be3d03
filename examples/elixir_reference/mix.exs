defmodule OtpnnRef.MixProject do
  use Mix.Project

  # Pure Elixir/Erlang: no Hex packages, so it builds offline from Debian's elixir and erlang-*.
  def project do
    [
      app: :otpnn_ref,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: false,
      deps: []
    ]
  end

  def application do
    [mod: {OtpnnRef.Application, []}, extra_applications: [:logger, :crypto]]
  end
end
