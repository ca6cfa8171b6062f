"""The milter wire protocol (version 6, as Sendmail's libmilter and Postfix speak it).

Only the codec lives here: framing, option negotiation and the decoding of commands and
encoding of replies, with no I/O and no policy, so every byte can be tested by hand.
Constants follow libmilter's ``mfdef.h``. A packet is a 4-byte big-endian length (which
counts the command byte), one command byte, then the command's data.

Anything that does not follow the format raises ``ProtocolError``; the server then closes
that one connection (the MTA applies its ``milter_default_action``) and keeps serving the
others.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

VERSION = 6
# Largest packet we accept. libmilter sends body chunks of at most 65535 bytes, but one
# header (Postfix's header_size_limit is 100 KiB) or a negotiated larger chunk size can
# exceed that; anything beyond this bound is treated as a broken or hostile peer.
MAX_PACKET = 1 << 20
CHUNK_SIZE = 65535  # largest body chunk we send back (SMFIR_REPLBODY), as libmilter does

# Commands (MTA -> milter)
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_QUIT_NC = b"K"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"
COMMANDS = frozenset(
    (SMFIC_ABORT, SMFIC_BODY, SMFIC_CONNECT, SMFIC_MACRO, SMFIC_BODYEOB, SMFIC_HELO, SMFIC_QUIT_NC,
     SMFIC_HEADER, SMFIC_MAIL, SMFIC_EOH, SMFIC_OPTNEG, SMFIC_QUIT, SMFIC_RCPT, SMFIC_DATA, SMFIC_UNKNOWN)
)

# Replies (milter -> MTA)
SMFIR_ADDRCPT = b"+"
SMFIR_DELRCPT = b"-"
SMFIR_ACCEPT = b"a"
SMFIR_REPLBODY = b"b"
SMFIR_CONTINUE = b"c"
SMFIR_DISCARD = b"d"
SMFIR_ADDHEADER = b"h"
SMFIR_INSHEADER = b"i"
SMFIR_SETSYMLIST = b"l"
SMFIR_CHGHEADER = b"m"
SMFIR_PROGRESS = b"p"
SMFIR_QUARANTINE = b"q"
SMFIR_REJECT = b"r"
SMFIR_TEMPFAIL = b"t"
SMFIR_REPLYCODE = b"y"

# Actions the milter may take (SMFIF_*), negotiated in OPTNEG
SMFIF_ADDHDRS = 0x01
SMFIF_CHGBODY = 0x02
SMFIF_ADDRCPT = 0x04
SMFIF_DELRCPT = 0x08
SMFIF_CHGHDRS = 0x10
SMFIF_QUARANTINE = 0x20
SMFIF_CHGFROM = 0x40
SMFIF_ADDRCPT_PAR = 0x80
SMFIF_SETSYMLIST = 0x100

# Protocol steps (SMFIP_*): steps the MTA may skip, and steps that get no reply
SMFIP_NOCONNECT = 0x01
SMFIP_NOHELO = 0x02
SMFIP_NOMAIL = 0x04
SMFIP_NORCPT = 0x08
SMFIP_NOBODY = 0x10
SMFIP_NOHDRS = 0x20
SMFIP_NOEOH = 0x40
SMFIP_NR_HDR = 0x80
SMFIP_NOUNKNOWN = 0x100
SMFIP_NODATA = 0x200
SMFIP_SKIP = 0x400
SMFIP_RCPT_REJ = 0x800
SMFIP_NR_CONN = 0x1000
SMFIP_NR_HELO = 0x2000
SMFIP_NR_MAIL = 0x4000
SMFIP_NR_RCPT = 0x8000
SMFIP_NR_DATA = 0x10000
SMFIP_NR_UNKN = 0x20000
SMFIP_NR_EOH = 0x40000
SMFIP_NR_BODY = 0x80000
SMFIP_HDR_LEADSPC = 0x100000

# Macro stages for the OPTNEG macro lists (SMFIM_*)
SMFIM_CONNECT = 0
SMFIM_HELO = 1
SMFIM_ENVFROM = 2
SMFIM_ENVRCPT = 3
SMFIM_DATA = 4
SMFIM_EOM = 5
SMFIM_EOH = 6

# Which "no reply" flag silences which command's reply.
NO_REPLY_FLAG = {
    SMFIC_CONNECT: SMFIP_NR_CONN,
    SMFIC_HELO: SMFIP_NR_HELO,
    SMFIC_MAIL: SMFIP_NR_MAIL,
    SMFIC_RCPT: SMFIP_NR_RCPT,
    SMFIC_DATA: SMFIP_NR_DATA,
    SMFIC_UNKNOWN: SMFIP_NR_UNKN,
    SMFIC_HEADER: SMFIP_NR_HDR,
    SMFIC_EOH: SMFIP_NR_EOH,
    SMFIC_BODY: SMFIP_NR_BODY,
}


class ProtocolError(Exception):
    """The peer sent something that is not the milter protocol; the connection is closed."""


# ---------------------------------------------------------------------- framing


def encode_packet(command: bytes, data: bytes = b"") -> bytes:
    if len(command) != 1:
        raise ValueError("a milter command is one byte")
    return struct.pack("!I", len(data) + 1) + command + data


def packet_length(header: bytes, limit: int = MAX_PACKET) -> int:
    """The length announced by a 4-byte packet header, checked against ``limit``."""
    if len(header) != 4:
        raise ProtocolError("truncated packet length")
    length = int.from_bytes(header, "big")
    if length < 1:
        raise ProtocolError("empty packet (no command byte)")
    if length > limit:
        raise ProtocolError(f"packet of {length} bytes exceeds the limit of {limit}")
    return length


def split_packets(buffer: bytes, limit: int = MAX_PACKET) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Decode every complete packet in ``buffer``: ([(command, data)], rest). For tests and
    clients; the server reads packet by packet from its stream."""
    packets: list[tuple[bytes, bytes]] = []
    while len(buffer) >= 4:
        length = packet_length(buffer[:4], limit)
        if len(buffer) < 4 + length:
            break
        body = buffer[4: 4 + length]
        packets.append((body[:1], body[1:]))
        buffer = buffer[4 + length:]
    return packets, buffer


# ---------------------------------------------------------------------- commands


def _cstrings(data: bytes, what: str) -> list[bytes]:
    """NUL-terminated strings, as every string argument is sent; a missing terminator is an
    error (the packet was cut or forged)."""
    if not data.endswith(b"\0"):
        raise ProtocolError(f"{what}: string not NUL-terminated")
    return data[:-1].split(b"\0")


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class OptNeg:
    version: int
    actions: int
    protocol: int
    macros: dict[int, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        data = struct.pack("!III", self.version, self.actions, self.protocol)
        for stage, names in sorted(self.macros.items()):
            data += struct.pack("!I", stage) + names.encode("ascii") + b"\0"
        return encode_packet(SMFIC_OPTNEG, data)


def decode_optneg(data: bytes) -> OptNeg:
    if len(data) < 12:
        raise ProtocolError(f"option negotiation needs 12 bytes, got {len(data)}")
    version, actions, protocol = struct.unpack("!III", data[:12])
    macros: dict[int, str] = {}
    rest = data[12:]
    while rest:
        if len(rest) < 5:
            raise ProtocolError("truncated macro list in option negotiation")
        (stage,) = struct.unpack("!I", rest[:4])
        end = rest.find(b"\0", 4)
        if end < 0:
            raise ProtocolError("macro list not NUL-terminated")
        macros[stage] = _text(rest[4:end])
        rest = rest[end + 1:]
    return OptNeg(version, actions, protocol, macros)


@dataclass(frozen=True)
class Connect:
    hostname: str
    family: str  # "4", "6", "L" (unix socket), "U" (unknown)
    port: int
    address: str


def decode_connect(data: bytes) -> Connect:
    end = data.find(b"\0")
    if end < 0 or len(data) < end + 2:
        raise ProtocolError("connect: truncated")
    hostname = _text(data[:end])
    family = chr(data[end + 1])
    rest = data[end + 2:]
    if family == "U":
        return Connect(hostname, family, 0, "")
    if family not in "46L":
        raise ProtocolError(f"connect: unknown address family {family!r}")
    if len(rest) < 3:
        raise ProtocolError("connect: truncated address")
    (port,) = struct.unpack("!H", rest[:2])
    (address,) = _cstrings(rest[2:], "connect address")[:1]
    return Connect(hostname, family, port, _text(address))


def decode_macros(data: bytes) -> tuple[bytes, dict[str, str]]:
    """(the command the macros belong to, {name: value}); braces around names removed."""
    if not data:
        raise ProtocolError("macro: missing command")
    command, rest = data[:1], data[1:]
    values: dict[str, str] = {}
    if rest:
        items = _cstrings(rest, "macro")
        if len(items) % 2:
            raise ProtocolError("macro: a name without a value")
        for name, value in zip(items[::2], items[1::2]):
            values[_text(name).strip("{}")] = _text(value)
    return command, values


def decode_strings(data: bytes, what: str) -> list[str]:
    """Arguments of helo, mail, rcpt and unknown: NUL-terminated strings."""
    return [_text(s) for s in _cstrings(data, what)]


def decode_header(data: bytes) -> tuple[str, str]:
    name, value = decode_header_bytes(data)
    return _text(name), _text(value)


def decode_header_bytes(data: bytes) -> tuple[bytes, bytes]:
    """A header's name and value as sent (the milter reassembles the message from bytes)."""
    items = _cstrings(data, "header")
    if len(items) != 2:
        raise ProtocolError("header: expected a name and a value")
    name, value = items
    if not name:
        raise ProtocolError("header: empty name")
    return name, value


def envelope_address(arg: str) -> str:
    """``<user@example>`` (as MAIL and RCPT carry it) to ``user@example``."""
    arg = arg.strip()
    if arg.startswith("<") and arg.endswith(">"):
        return arg[1:-1]
    return arg


# ---------------------------------------------------------------------- replies


def _cstr(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape") + b"\0"


def reply(command: bytes) -> bytes:
    """A reply without data: continue, accept, discard, tempfail, reject, progress."""
    return encode_packet(command)


def add_header(name: str, value: str) -> bytes:
    return encode_packet(SMFIR_ADDHEADER, _cstr(name) + _cstr(value))


def insert_header(index: int, name: str, value: str) -> bytes:
    return encode_packet(SMFIR_INSHEADER, struct.pack("!I", index) + _cstr(name) + _cstr(value))


def change_header(index: int, name: str, value: str) -> bytes:
    """Change the ``index``-th (1-based) header called ``name``; an empty value deletes it."""
    return encode_packet(SMFIR_CHGHEADER, struct.pack("!I", index) + _cstr(name) + _cstr(value))


def replace_body(body: bytes) -> list[bytes]:
    """The new body in packets of at most CHUNK_SIZE bytes (an empty body is one packet)."""
    chunks = [body[i: i + CHUNK_SIZE] for i in range(0, len(body), CHUNK_SIZE)] or [b""]
    return [encode_packet(SMFIR_REPLBODY, chunk) for chunk in chunks]


def quarantine(reason: str) -> bytes:
    return encode_packet(SMFIR_QUARANTINE, _cstr(reason))


def reply_code(text: str) -> bytes:
    """An SMTP reply such as ``550 5.7.1 reason``, one line, printable ASCII."""
    if not (len(text) >= 3 and text[:3].isdigit() and text[0] in "45"):
        raise ValueError(f"reply code must start with 4xx or 5xx: {text!r}")
    return encode_packet(SMFIR_REPLYCODE, _cstr(safe_reply_text(text)))


def safe_reply_text(text: str, limit: int = 400) -> str:
    """Printable ASCII on one line; '%' dropped (libmilter treats it as a format escape)."""
    cleaned = "".join(c if " " <= c <= "~" and c != "%" else " " for c in text)
    return " ".join(cleaned.split())[:limit]
