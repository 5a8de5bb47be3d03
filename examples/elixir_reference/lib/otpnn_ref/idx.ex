defmodule OtpnnRef.IDX do
  @moduledoc """
  IDX files (MNIST's container), gzipped or raw, read with `:zlib` and binary pattern matching.

  Only the leading `count` samples are kept (a fixed subset when the export says so). The pixel
  data stays one binary: large binaries are reference-counted, so handing it to every worker
  process shares it instead of copying it.
  """

  @doc "Read an IDX file of unsigned bytes; returns {binary of count * row bytes, row bytes}."
  @spec read!(Path.t(), pos_integer(), non_neg_integer()) :: {binary(), pos_integer()}
  def read!(path, ndim, count) do
    data = path |> File.read!() |> maybe_gunzip()

    case data do
      <<0, 0, 0x08, ^ndim, rest::binary>> ->
        header_len = 4 * ndim
        <<dims_bin::binary-size(header_len), body::binary>> = rest
        [n | row_dims] = for <<d::big-32 <- dims_bin>>, do: d
        row = Enum.product(row_dims)

        cond do
          byte_size(body) != n * row ->
            raise "#{path}: #{byte_size(body)} data bytes, expected #{n * row}"

          count > n ->
            raise "#{path}: holds #{n} samples, the export asks for #{count}"

          true ->
            {binary_part(body, 0, count * row), row}
        end

      _ ->
        raise "#{path}: not an IDX file of unsigned bytes with #{ndim} dimensions"
    end
  end

  defp maybe_gunzip(<<0x1F, 0x8B, _::binary>> = gz), do: :zlib.gunzip(gz)
  defp maybe_gunzip(raw), do: raw
end
