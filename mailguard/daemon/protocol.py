"""The daemon's wire format: length-prefixed JSON headers, raw message bytes after them.

Every frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON (an object).
A ``scan`` request's header says how many bytes of message follow it; the reply is one
frame. Requests on one connection are answered in order, so a client may send many
before reading (pipelining). Lengths are checked against limits before anything is read,
so a hostile or broken peer cannot make either side allocate without bound.

    hello  {"op": "hello", "config": FINGERPRINT}      -> {"ok": true, "config": ..., "pid": ..., "version": ...,
                                                            "paths": bool, "max_message_bytes": N}
    scan   {"op": "scan", "size": N, "envelope": {...} | null} + N bytes
                                                        -> {"ok": true, "verdict": {...}} | {"ok": false, "error": "..."}
           {"op": "scan", "path": "/abs/file", "dev": D, "ino": I, ...}
                                                        (the daemon reads it; only when the hello said "paths",
                                                         only a regular file, and only when it is the file of
                                                         st_dev D and st_ino I, when the client says)
           {..., "reply": "json"}                      -> {"ok": true, "action": ..., "tempfail": ..., "size": M} + M bytes
                                                           of the verdict as ``check --json`` prints it
"""
from __future__ import annotations

import hashlib
import json
import os
import struct

TYPE_CHECKING = False  # neither typing nor pathlib at run time: `mailguard check`'s client imports this
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

HEADER = struct.Struct(">I")
MAX_HEADER_BYTES = 1 << 20  # a JSON header or reply larger than this is a broken peer
DEFAULT_CONFIG = "built-in defaults"


class DaemonUnavailable(Exception):
    """No daemon on the socket, a different configuration, or a broken connection.
    ``retry``: whether trying again can help (the connection broke mid-request)."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class UnsafeSocketFolder(DaemonUnavailable):
    """The socket is in a folder someone else could have put it in (``where.unsafe_socket_folder``):
    not used, and said so even where a missing daemon is not worth a word."""


class ProtocolError(Exception):
    """The peer sent something that is not this protocol, or closed mid-frame."""


def config_fingerprint(path: str | Path | None, data: bytes | None = None) -> str:
    """What identifies a configuration cheaply, without loading it: the file's absolute
    path and a hash of its bytes (``data``, when the caller has read them already). A
    client whose configuration differs from the daemon's scans in-process instead, so a
    verdict never comes from settings the user did not ask for."""
    if not path:
        return DEFAULT_CONFIG
    resolved = os.path.realpath(path)  # what Path.resolve() gives, without importing pathlib
    if data is None:
        with open(resolved, "rb") as handle:
            data = handle.read()
    return f"{resolved}:{hashlib.sha256(data).hexdigest()}"


def frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    """One request or reply as bytes (a client may join several into one send)."""
    data = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(len(data)) + data + body


def read_exact(stream: Any, size: int) -> bytes:
    """``size`` bytes from a buffered reader (``socket.makefile("rb")``); EOF mid-way is
    a ProtocolError, EOF before the first byte returns b""."""
    data = stream.read(size)
    if data is None or (len(data) < size and data):
        raise ProtocolError("connection closed in the middle of a frame")
    return data or b""


def receive(stream: Any) -> dict[str, Any] | None:
    """The next JSON frame, or None at a clean end of the connection."""
    head = read_exact(stream, HEADER.size)
    if not head:
        return None
    if len(head) < HEADER.size:
        raise ProtocolError("connection closed in the middle of a frame")
    (length,) = HEADER.unpack(head)
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(f"frame of {length} bytes is over the limit of {MAX_HEADER_BYTES}")
    data = read_exact(stream, length)
    if len(data) < length:
        raise ProtocolError("connection closed in the middle of a frame")
    return decode(data)


def decode(data: bytes) -> dict[str, Any]:
    """A frame's JSON object."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError("frame is not a JSON object")
    return value
