"""HTTP/1 as the proxy reads it: request heads, body framing, chunked bodies, the head sent upstream.

Besides the cases, each parser is fuzzed: only its documented exceptions may escape, and what
it accepts is what a strict reading of the same bytes gives, so that the client and the
upstream can never see two different requests in them.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.egress.http1 import (
    HOP_BY_HOP,
    TOKEN,
    Request,
    body_framing,
    forward_chunked,
    parse_head,
    split_url,
    upstream_head,
)

CHUNKED_ERRORS = (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


# ---------------------------------------------------------------- chunked bodies


def forward(data: bytes) -> tuple[bytes, bytes, Exception | None]:
    """What forward_chunked sends on, what it leaves unread, and what it raised."""

    async def go() -> tuple[bytes, bytes, Exception | None]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        sent: list[bytes] = []

        async def send(part: bytes) -> None:
            sent.append(part)

        error: Exception | None = None
        try:
            await forward_chunked(reader, send)
        except Exception as exc:
            error = exc
        return b"".join(sent), await reader.read(), error

    return asyncio.run(go())


def run_chunked(data: bytes) -> tuple[bytes, bytes]:
    """What forward_chunked sends on, and what it leaves unread."""
    sent, rest, error = forward(data)
    if error is not None:
        raise error
    return sent, rest


def decode_chunked(data: bytes) -> tuple[bytes, int] | None:
    """A strict reading (RFC 9112, section 7.1) of the chunked message data starts with.

    Its payload and length, or None when data does not start with a whole, well-formed one.
    """
    payload, pos = b"", 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        line, pos = data[pos:end], end + 2
        size_text = line.split(b";", 1)[0].strip(b" \t")
        if b"\r" in line or b"\n" in line or not re.fullmatch(rb"[0-9a-fA-F]{1,16}", size_text):
            return None
        size = int(size_text, 16)
        if size == 0:
            break
        if data[pos + size : pos + size + 2] != b"\r\n":
            return None
        payload, pos = payload + data[pos : pos + size], pos + size + 2
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        line, pos = data[pos:end], end + 2
        if not line:
            return payload, pos
        if b"\r" in line or b"\n" in line:
            return None


def test_forward_chunked_stops_after_the_trailers() -> None:
    body = b"3\r\nabc\r\n10;name=value\r\n0123456789abcdef\r\n0\r\nX-Sum: 1\r\n\r\n"
    assert run_chunked(body + b"GET / HTTP/1.1\r\n\r\n") == (body, b"GET / HTTP/1.1\r\n\r\n")


@pytest.mark.parametrize(
    "data",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcX\r\n0\r\n\r\n", b"3\nabc\r\n0\r\n\r\n", b"3;\nx\r\nabc\r\n0\r\n\r\n"],
)
def test_forward_chunked_rejects_malformed_framing(data: bytes) -> None:
    with pytest.raises(ValueError):
        run_chunked(data)


def test_forward_chunked_reports_a_body_cut_short() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        run_chunked(b"10\r\nshort")


@st.composite
def chunked_messages(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A well-formed chunked message in the many spellings senders use, and its payload."""
    chunks = draw(st.lists(st.binary(min_size=1, max_size=300), max_size=6))
    extension = st.sampled_from([b"", b";a=1", b";name=value;x", b' ;q="x y"'])
    size_line = st.tuples(st.sampled_from(["{:x}", "{:X}", "{:04x}"]), st.sampled_from([b"", b" ", b"\t"]), extension)
    message = b""
    for chunk in [*chunks, b""]:
        form, space, ext = draw(size_line)
        message += form.format(len(chunk)).encode() + space + ext + b"\r\n"
        message += chunk + b"\r\n" if chunk else b""
    trailer = st.from_regex(rb"\A[A-Za-z-]{1,12}: [ -~]{0,20}\Z")
    for line in draw(st.lists(trailer, max_size=3)):
        message += line + b"\r\n"
    return message + b"\r\n", b"".join(chunks)


@pytest.mark.slow
@settings(max_examples=300)
@given(chunked_messages(), st.binary(max_size=100))
def test_a_well_formed_chunked_body_is_forwarded_to_its_end_and_not_a_byte_further(
    message: tuple[bytes, bytes], after: bytes
) -> None:
    body, payload = message
    assert run_chunked(body + after) == (body, after)
    assert decode_chunked(body) == (payload, len(body))


def check_forwarding(data: bytes) -> None:
    sent, rest, error = forward(data)
    if error is not None:
        assert isinstance(error, CHUNKED_ERRORS), repr(error)
        return
    # Accepted: exactly one whole message was passed on, as it came, and nothing after it.
    assert sent + rest == data
    strict = decode_chunked(data)
    assert strict is not None
    assert strict[1] == len(sent)
    assert decode_chunked(sent) == strict


@settings(max_examples=500)
@given(st.binary(max_size=600) | st.text(alphabet="0123456789abcdefxyz;= \t\r\n:", max_size=200).map(str.encode))
def test_forward_chunked_refuses_or_forwards_exactly_one_strictly_read_message(data: bytes) -> None:
    check_forwarding(data)


@pytest.mark.slow
@settings(max_examples=500)
@given(chunked_messages(), st.data())
def test_forward_chunked_refuses_or_forwards_exactly_one_message_of_a_mangled_body(
    message: tuple[bytes, bytes], data: st.DataObject
) -> None:
    body = message[0]
    at = data.draw(st.integers(0, len(body) - 1))
    edit = data.draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
    byte = bytes([data.draw(st.sampled_from([0x0A, 0x0D, 0x20, 0x3B, 0x30, 0x46, 0x67, 0x00, 0xFF]))])
    mangled = {
        "replace": body[:at] + byte + body[at + 1 :],
        "insert": body[:at] + byte + body[at:],
        "delete": body[:at] + body[at + 1 :],
        "cut": body[:at],
    }[edit]
    check_forwarding(mangled)


# ---------------------------------------------------------------- request heads

METHODS = st.from_regex(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]{1,10}\Z")
TARGETS = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
VALUES = st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n\0"), max_size=30).map(
    lambda value: value.strip(" \t")
)
HEADERS = st.lists(st.tuples(st.from_regex(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]{1,16}\Z"), VALUES), max_size=6)


def check_request(request: Request) -> None:
    """What every accepted request head satisfies."""
    assert TOKEN.fullmatch(request.method)
    assert request.version in ("HTTP/1.0", "HTTP/1.1")
    assert request.target
    assert all(0x20 < ord(c) < 0x7F for c in request.target)
    for name, value in request.headers:
        assert TOKEN.fullmatch(name)
        assert not set(value) & set("\r\n\0")
        assert value == value.strip(" \t")


@pytest.mark.slow
@settings(max_examples=300)
@given(METHODS, TARGETS, st.sampled_from(["HTTP/1.0", "HTTP/1.1"]), HEADERS, st.integers(0, 2))
def test_a_request_head_reads_back_as_written(
    method: str, target: str, version: str, headers: list[tuple[str, str]], blank_lines: int
) -> None:
    head = "\r\n" * blank_lines + f"{method} {target} {version}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    assert parse_head(head.encode("latin-1")) == Request(method, target, version, headers)


@settings(max_examples=500)
@given(st.binary(max_size=400).map(lambda data: data + b"\r\n\r\n"))
def test_request_head_parser_only_ever_raises_value_error(data: bytes) -> None:
    try:
        request = parse_head(data)
    except ValueError:
        return
    check_request(request)


@pytest.mark.slow
@settings(max_examples=500)
@given(METHODS, TARGETS, HEADERS, st.data())
def test_a_mangled_request_head_is_refused_or_still_a_well_formed_request(
    method: str, target: str, headers: list[tuple[str, str]], data: st.DataObject
) -> None:
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    raw = head.encode("latin-1")
    at = data.draw(st.integers(0, len(raw)))
    byte = bytes([data.draw(st.sampled_from([0x00, 0x0A, 0x0D, 0x20, 0x3A, 0x7F, 0x80, 0xFF]))])
    try:
        request = parse_head(raw[:at] + byte + raw[at:] + b"\r\n")
    except ValueError:
        return
    check_request(request)


@pytest.mark.slow
@settings(max_examples=300)
@given(METHODS, TARGETS, HEADERS, TARGETS)
def test_the_head_sent_upstream_has_exactly_the_lines_the_proxy_means(
    method: str, target: str, headers: list[tuple[str, str]], path: str
) -> None:
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    request = parse_head(head.encode("latin-1"))
    sent = parse_head(upstream_head(request, path, "up.test:8080", extra=[("x-api-key", "k")], drop={"x-api-key"}))
    named = {t.strip().lower() for v in request.values("connection") for t in v.split(",")}
    named -= {"content-length", "transfer-encoding", "host"}
    kept = [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP | named | {"host", "x-api-key"}]
    assert (sent.method, sent.target, sent.version) == (method, path, "HTTP/1.1")
    assert sent.headers == [("Host", "up.test:8080"), *kept, ("x-api-key", "k"), ("Connection", "close")]


# ---------------------------------------------------------------- body framing

FRAMING_VALUES = st.lists(
    st.sampled_from(["chunked", "Chunked", " chunked ", "gzip", "identity", "", ",", "chunked, chunked"])
    | st.sampled_from(["0", "5", "05", " 5 ", "5, 5", "5,6", "-1", "+5", "1e3", "\uff15", "9" * 19, "0x5"])
    | st.text(max_size=8),
    max_size=3,
)


@pytest.mark.slow
@settings(max_examples=500)
@given(FRAMING_VALUES, FRAMING_VALUES, st.sampled_from(["Transfer-Encoding", "transfer-encoding", "TE"]))
def test_body_framing_is_one_unambiguous_length_or_refused(te: list[str], cl: list[str], te_name: str) -> None:
    headers = [(te_name, value) for value in te] + [("Content-Length", value) for value in cl]
    request = Request("POST", "http://x.test/", "HTTP/1.1", headers)
    try:
        length = body_framing(request)
    except ValueError:
        return
    codings = [c.strip().lower() for v in te for c in v.split(",")] if te_name != "TE" else []
    lengths = [v.strip() for value in cl for v in value.split(",")]
    if length is None:
        assert codings == ["chunked"]
        assert lengths == []
    else:
        assert codings == []
        assert all(v.isascii() and v.isdigit() and int(v) == length for v in lengths)
        assert lengths or length == 0


# ---------------------------------------------------------------- absolute-form targets


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40))
def test_an_absolute_url_splits_into_an_authority_and_an_origin_form_target(rest: str) -> None:
    try:
        authority, path = split_url(f"http://{rest}")
    except ValueError:
        assert "@" in rest
        return
    assert not set(authority) & set("/?#@")
    assert path.startswith("/")
    assert "#" not in path
    assert rest.startswith(authority)
