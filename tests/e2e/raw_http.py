"""Raw HTTP/1.1 exchanges over asyncio streams, for requests no HTTP client library would send as written."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

READ_TIMEOUT_SECONDS = 60.0
"""Generous: only proves the server answers (or closes) rather than hanging."""


@dataclass(frozen=True)
class RawResponse:
    """What came back: no status if the server closed the connection without answering."""

    status: int | None
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def request_bytes(
    method: str, path: str, headers: dict[str, str] | list[tuple[str, str]], body: bytes = b""
) -> bytes:
    """A request as written on the wire; `Connection: close` so the server ends the exchange."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in pairs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def exchange(base_url: str, payload: bytes, *, close_write: bool = False) -> RawResponse:
    """Send `payload`, then (with `close_write`) half-close, and read until the server closes.

    A server may answer and close before it has read everything sent (e.g. a body over the limit): a
    reset while writing is then not an error, the answer is still read."""
    host, port = address(base_url)
    reader, writer = await asyncio.open_connection(host, port)
    try:

        async def send() -> None:
            try:
                writer.write(payload)
                await writer.drain()
                if close_write:
                    writer.write_eof()
            except ConnectionError:
                pass

        sending = asyncio.create_task(send())
        try:
            raw = await asyncio.wait_for(_read_all(reader), READ_TIMEOUT_SECONDS)
        finally:
            await sending
        return parse_response(raw)
    finally:
        writer.close()


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    try:
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    except ConnectionError:  # a reset after the answer: keep what arrived
        pass
    return b"".join(chunks)


def parse_response(raw: bytes) -> RawResponse:
    """Status line, headers (lower-cased names) and the body, de-chunked if it was sent chunked."""
    if not raw:
        return RawResponse(None, {}, b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = dechunk(body)
    return RawResponse(status, headers, body)


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked body (stops at the last chunk or where the data ends)."""
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2 :]
    return b"".join(out)
