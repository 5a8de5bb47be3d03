defmodule OtpnnRef.JSON do
  @moduledoc """
  A minimal JSON encoder and decoder: OTP 25 (Debian bookworm) has no `:json` module and this
  project uses no Hex packages. Enough for the export manifest, safetensors headers and reports.
  """

  @doc "Encode maps (atom or string keys), lists, strings, numbers, booleans and nil."
  @spec encode(term()) :: iodata()
  def encode(nil), do: "null"
  def encode(true), do: "true"
  def encode(false), do: "false"
  def encode(n) when is_integer(n), do: Integer.to_string(n)
  def encode(f) when is_float(f), do: :erlang.float_to_binary(f, [:short])
  def encode(a) when is_atom(a), do: encode(Atom.to_string(a))
  def encode(s) when is_binary(s), do: [?", escape(s), ?"]
  def encode(l) when is_list(l), do: [?[, Enum.map_intersperse(l, ?,, &encode/1), ?]]

  def encode(m) when is_map(m) do
    pairs = Enum.map(m, fn {k, v} -> [encode(to_string(k)), ?:, encode(v)] end)
    [?{, Enum.intersperse(pairs, ?,), ?}]
  end

  defp escape(s) do
    for <<c::utf8 <- s>>, into: "" do
      case c do
        ?" -> "\\\""
        ?\\ -> "\\\\"
        ?\n -> "\\n"
        ?\t -> "\\t"
        c when c < 0x20 -> "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")
        c -> <<c::utf8>>
      end
    end
  end

  @doc "Decode a JSON text; raises ArgumentError naming the position of the first error."
  @spec decode!(binary()) :: term()
  def decode!(text) do
    case value(skip(text)) do
      {v, rest} ->
        if skip(rest) == "", do: v, else: fail(rest)
    end
  end

  defp skip(<<c, rest::binary>>) when c in ~c" \t\r\n", do: skip(rest)
  defp skip(rest), do: rest

  defp value("{" <> rest), do: object(skip(rest), %{})
  defp value("[" <> rest), do: array(skip(rest), [])
  defp value("\"" <> rest), do: string(rest, [])
  defp value("true" <> rest), do: {true, rest}
  defp value("false" <> rest), do: {false, rest}
  defp value("null" <> rest), do: {nil, rest}
  defp value(<<c, _::binary>> = text) when c in ~c"-0123456789", do: number(text)
  defp value(text), do: fail(text)

  defp object("}" <> rest, acc), do: {acc, rest}

  defp object("\"" <> rest, acc) do
    {key, rest} = string(rest, [])
    ":" <> rest = skip(rest)
    {v, rest} = value(skip(rest))

    case skip(rest) do
      "," <> rest -> object(skip(rest), Map.put(acc, key, v))
      "}" <> rest -> {Map.put(acc, key, v), rest}
      other -> fail(other)
    end
  end

  defp object(text, _), do: fail(text)

  defp array("]" <> rest, []), do: {[], rest}

  defp array(text, acc) do
    {v, rest} = value(text)

    case skip(rest) do
      "," <> rest -> array(skip(rest), [v | acc])
      "]" <> rest -> {Enum.reverse([v | acc]), rest}
      other -> fail(other)
    end
  end

  defp string("\"" <> rest, acc), do: {IO.iodata_to_binary(Enum.reverse(acc)), rest}

  defp string("\\u" <> <<hex::binary-size(4), rest::binary>>, acc),
    do: string(rest, [<<String.to_integer(hex, 16)::utf8>> | acc])

  defp string("\\" <> <<c, rest::binary>>, acc), do: string(rest, [unescape(c) | acc])
  defp string(<<c, rest::binary>>, acc), do: string(rest, [c | acc])
  defp string("", _), do: fail("")

  defp unescape(?n), do: ?\n
  defp unescape(?t), do: ?\t
  defp unescape(?r), do: ?\r
  defp unescape(?b), do: ?\b
  defp unescape(?f), do: ?\f
  defp unescape(c), do: c

  defp number(text) do
    {token, rest} = take_number(text, [])
    token = IO.iodata_to_binary(token)

    cond do
      String.contains?(token, [".", "e", "E"]) ->
        {elem(Float.parse(token), 0), rest}

      true ->
        {String.to_integer(token), rest}
    end
  end

  defp take_number(<<c, rest::binary>>, acc) when c in ~c"-+.eE0123456789",
    do: take_number(rest, [acc, c])

  defp take_number(rest, acc), do: {acc, rest}

  defp fail(rest),
    do:
      raise(
        ArgumentError,
        "invalid JSON near: #{inspect(binary_part(rest, 0, min(20, byte_size(rest))))}"
      )
end
