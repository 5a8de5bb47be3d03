defmodule OtpnnRef.Safetensors do
  @moduledoc """
  Reads the initial weights otpnn exports (`layer{i}.weight` (in, out), `layer{i}.bias`) from a
  safetensors file: an 8-byte little-endian header length, a JSON header, then raw tensors.
  """

  alias OtpnnRef.JSON

  @doc "Tensors by name as {shape, flat list of floats (float64)}."
  @spec read!(Path.t()) :: %{String.t() => {[non_neg_integer()], [float()]}}
  def read!(path) do
    <<len::little-64, header::binary-size(len), data::binary>> = File.read!(path)

    for {name, %{"dtype" => dtype, "shape" => shape, "data_offsets" => [a, b]}} <-
          JSON.decode!(header),
        into: %{} do
      {name, {shape, decode(dtype, binary_part(data, a, b - a))}}
    end
  end

  defp decode("F32", bin), do: for(<<x::float-32-little <- bin>>, do: x)
  defp decode("F64", bin), do: for(<<x::float-64-little <- bin>>, do: x)
  defp decode(dtype, _), do: raise("unsupported safetensors dtype #{dtype}")
end
