"""Reading an upload: the request body streamed through python-multipart, off the event loop,
keeping only the field `file`, in memory, within a size limit and a time limit.

Nothing is spooled to disk and nothing but the file's bytes is kept; a body that is not
multipart, a Content-Type or part header flood, too many parts, a body past the limit and a
client that stops sending are each refused with their own 4xx, as soon as they show.

Example:
    >>> name, data = await read_upload(request, limit=25 * 2**20)
"""

from __future__ import annotations

import asyncio
import time

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["ApiError", "MAX_CONTENT_TYPE", "MAX_PARTS", "IDLE_SECONDS", "BODY_SECONDS", "read_upload"]

MAX_CONTENT_TYPE = 1024  # "multipart/form-data; boundary=..." (a boundary is at most 70 characters, RFC 2046)
MAX_PARTS = 16  # a form with a file needs one or two; more is a flood
MAX_PART_HEADERS, MAX_PART_HEADER_BYTES = 8, 4096
_MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file itself
IDLE_SECONDS = 30.0  # longest wait for the next piece of the body
BODY_SECONDS = 300.0  # longest time to receive a whole body (25 MB at 85 kB/s)


class ApiError(Exception):
    """An error with its HTTP status, answered as {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _FileField:
    """python-multipart callbacks that keep the bytes of the part named `file`, and its file name."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.name: str | None = None
        self.data = bytearray()
        self.found = False
        self.parts = 0
        self._field, self._value = bytearray(), bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._capture = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
        }

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise ApiError(400, f"the form has more than {MAX_PARTS} parts; send one field named 'file'")
        self._headers.clear()
        self._capture = False

    def _header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition", b"")
        _, params = parse_options_header(disposition)
        if params.get(b"name") == b"file" and not self.found:
            self.found, self._capture = True, True
            filename = params.get(b"filename", b"").decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
            self.name = filename or "upload"

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._capture:
            self.data.extend(data[start:end])
            if len(self.data) > self.limit:
                raise ApiError(413, f"upload is larger than the {self.limit / 2**20:g} MB limit; send a smaller file")


def _boundary(content_type: str) -> bytes:
    if len(content_type) > MAX_CONTENT_TYPE:
        raise ApiError(
            400, f"the Content-Type header is longer than {MAX_CONTENT_TYPE} characters; send multipart/form-data with a boundary"
        )
    kind, params = parse_options_header(content_type)
    if kind.lower() != b"multipart/form-data":
        raise ApiError(415, "send the image as multipart/form-data with a field named 'file'")
    boundary = params.get(b"boundary", b"")
    if not 1 <= len(boundary) <= 70:
        raise ApiError(400, "the multipart/form-data Content-Type has no valid boundary")
    return boundary


# the status nginx logs for a client that closed the connection first: never sent, only counted and logged
CLIENT_GONE = 499


async def _next_chunk(chunks, deadline: float) -> bytes | None:  # noqa: ANN001 - an async iterator of bytes
    wait = min(IDLE_SECONDS, deadline - time.monotonic())
    try:
        return await asyncio.wait_for(chunks.__anext__(), timeout=max(wait, 0.0))
    except StopAsyncIteration:
        return None
    except asyncio.TimeoutError:
        raise ApiError(408, "the upload arrived too slowly; the connection was idle too long or the body took too long to send") from None


async def read_upload(request: Request, limit: int) -> tuple[str, bytes]:
    """The multipart field `file` of the request: its file name (path parts dropped) and bytes."""
    boundary = _boundary(request.headers.get("content-type", ""))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD:
        raise ApiError(413, f"upload is larger than the {limit / 2**20:g} MB limit; send a smaller file")
    field = _FileField(limit)
    parser = MultipartParser(boundary, field.callbacks(), max_header_count=MAX_PART_HEADERS, max_header_size=MAX_PART_HEADER_BYTES)
    chunks, deadline, received = request.stream().__aiter__(), time.monotonic() + BODY_SECONDS, 0
    try:
        while (chunk := await _next_chunk(chunks, deadline)) is not None:
            received += len(chunk)
            if received > limit + _MULTIPART_OVERHEAD:
                raise ApiError(413, f"upload is larger than the {limit / 2**20:g} MB limit; send a smaller file")
            if chunk:
                await run_in_threadpool(parser.write, chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(400, f"the multipart body could not be parsed ({exc}); send the image as a form field named 'file'") from None
    except ClientDisconnect:  # nobody is left to answer: one log line and a count (`CLIENT_GONE`), not a traceback
        raise ApiError(CLIENT_GONE, "the client disconnected before its upload arrived") from None
    if not field.found:
        raise ApiError(422, "no form field named 'file': send the image as multipart/form-data field 'file'")
    return field.name or "upload", bytes(field.data)
