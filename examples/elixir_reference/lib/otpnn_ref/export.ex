defmodule OtpnnRef.Export do
  @moduledoc """
  The directory `otpnn export-init` writes: manifest.json (config, file paths, sample counts),
  init.safetensors (initial parameters), order.bin (the sample order of every epoch) and lr.bin
  (the learning rate of every update). Reading it is what makes this reference compute the same
  thing as otpnn, whatever otpnn's learning-rate schedule: the rates are data here.
  """

  alias OtpnnRef.{JSON, MLP, Safetensors}

  @doc "The manifest, with paths resolved against the export directory."
  @spec manifest!(Path.t()) :: map()
  def manifest!(dir) do
    m = dir |> Path.join("manifest.json") |> File.read!() |> JSON.decode!()

    # /1 predates lr.bin; it is read only for a constant rate (see rates!/2).
    unless m["format"] in ["otpnn-interchange/2", "otpnn-interchange/1"] do
      raise "#{dir}/manifest.json: format #{inspect(m["format"])}, expected otpnn-interchange/2"
    end

    resolve = fn split -> Map.new(m[split], fn {k, v} -> {k, path(dir, v)} end) end
    %{m | "train" => resolve.("train"), "test" => resolve.("test")}
  end

  defp path(dir, v) when is_binary(v), do: Path.expand(v, dir)
  defp path(_dir, v), do: v

  @doc "The initial parameters as MLP layers."
  @spec init_params!(Path.t(), map()) :: MLP.params()
  def init_params!(dir, manifest) do
    tensors = Safetensors.read!(Path.join(dir, manifest["init"]))
    n_layers = length(manifest["layer_sizes"]) - 1

    for i <- 0..(n_layers - 1) do
      {[_fan_in, fan_out], w} = tensors["layer#{i}.weight"]
      {[^fan_out], b} = tensors["layer#{i}.bias"]
      MLP.layer_from_row_major(w, fan_out, b)
    end
  end

  @doc "The sample order: a map epoch (from 1) => list of sample indices."
  @spec order!(Path.t(), map()) :: %{pos_integer() => [non_neg_integer()]}
  def order!(dir, manifest) do
    file = Path.join(dir, manifest["order"])

    case File.read!(file) do
      <<"OTPNORD1", n::little-32, epochs::little-32, body::binary>>
      when byte_size(body) == 4 * n * epochs ->
        for e <- 1..epochs, into: %{} do
          {e, for(<<i::little-32 <- binary_part(body, (e - 1) * 4 * n, 4 * n)>>, do: i)}
        end

      _ ->
        raise "#{file}: not an otpnn order file (OTPNORD1, n, epochs, epochs x n uint32 LE)"
    end
  end

  @doc """
  The learning rate of every update, a tuple: update t's rate is `elem(rates, t - 1)`.

  A manifest without an lr file (format /1) is read only if its config trains at a constant
  rate without warm-up; a scheduled config without one is refused rather than trained at the
  wrong rates.
  """
  @spec rates!(Path.t(), map()) :: tuple()
  def rates!(dir, %{"config" => cfg} = manifest) do
    per_epoch = div(manifest["train"]["count"] + cfg["batch_size"] - 1, cfg["batch_size"])
    steps = per_epoch * cfg["epochs"]

    case manifest["lr"] do
      nil ->
        unless Map.get(cfg, "lr_schedule", "constant") == "constant" and
                 Map.get(cfg, "lr_warmup_steps", 0) == 0 do
          raise "#{dir}/manifest.json: the config's learning rate is scheduled " <>
                  "(lr_schedule #{inspect(cfg["lr_schedule"])}, lr_warmup_steps " <>
                  "#{inspect(cfg["lr_warmup_steps"])}) but the manifest names no lr file; " <>
                  "export again with otpnn export-init"
        end

        Tuple.duplicate(cfg["lr"], steps)

      name ->
        read_rates!(Path.join(dir, name), per_epoch, cfg["epochs"])
    end
  end

  # A NaN or infinity does not match a float segment and a negative rate is filtered out, so
  # either leaves fewer rates than updates: the count check catches them with a wrong size.
  defp read_rates!(file, per_epoch, epochs) do
    rates =
      case File.read!(file) do
        <<"OTPNLRS1", ^per_epoch::little-32, ^epochs::little-32, body::binary>>
        when byte_size(body) == 8 * per_epoch * epochs ->
          for <<x::float-64-little <- body>>, x >= 0, do: x

        _ ->
          []
      end

    if length(rates) != per_epoch * epochs do
      raise "#{file}: not the otpnn rate file of this export (OTPNLRS1, steps per epoch " <>
              "#{per_epoch} and epochs #{epochs} as uint32 LE, then #{per_epoch * epochs} " <>
              "finite float64 LE rates >= 0)"
    end

    List.to_tuple(rates)
  end
end
