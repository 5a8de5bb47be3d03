defmodule OtpnnRef.Export do
  @moduledoc """
  The directory `otpnn export-init` writes: manifest.json (config, file paths, sample counts),
  init.safetensors (initial parameters) and order.bin (the sample order of every epoch).
  Reading it is what makes this reference compute the same thing as otpnn.
  """

  alias OtpnnRef.{JSON, MLP, Safetensors}

  @doc "The manifest, with paths resolved against the export directory."
  @spec manifest!(Path.t()) :: map()
  def manifest!(dir) do
    m = dir |> Path.join("manifest.json") |> File.read!() |> JSON.decode!()

    unless m["format"] == "otpnn-interchange/1" do
      raise "#{dir}/manifest.json: format #{inspect(m["format"])}, expected otpnn-interchange/1"
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
end
