"""The quarantine key: loaded or created once, then used to seal and open entries.

A held message is patient data, so everything that could identify a person (the message
bytes, envelope, subject, findings) is sealed with AES-256-GCM before it reaches the disk.
The key file holds one random 256-bit master key; two sub-keys are derived from it with
HKDF (one to encrypt, one to compute keyed hashes of recipient addresses so ``list
--recipient`` works without storing addresses in the clear). A short key id, derived from
the key, is written into the store on first use so that a different key is detected before
anything is written, instead of silently mixing entries no key can open.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger("mailguard.quarantine")

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16  # the GCM authentication tag at the end of every sealed value
SEAL_VERSION = b"\x01"
_KEY_PREFIX = "mailguard-quarantine-key-v1:"


class KeyFileError(Exception):
    """The key file is missing, unreadable or malformed; worded for the IT person."""


class KeyFileExposedError(KeyFileError):
    """The key file can be read (or written) by users other than its owner: refused, with the
    chmod that fixes it, since anyone who can read it can read every held message."""


class SealError(Exception):
    """A sealed value could not be opened: wrong key, or the data was damaged."""


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"mailguard-quarantine " + purpose).derive(master)


@dataclass(frozen=True)
class KeyRing:
    """The derived keys of one master key. Immutable and safe to share between threads."""

    key_id: str
    _enc: bytes
    _mac: bytes
    _release: bytes = b""

    @classmethod
    def from_master(cls, master: bytes) -> "KeyRing":
        if len(master) != KEY_BYTES:
            raise KeyFileError(f"a quarantine key must be {KEY_BYTES} bytes, got {len(master)}")
        key_id = hashlib.sha256(_derive(master, b"key-id")).hexdigest()[:16]
        return cls(key_id, _derive(master, b"encrypt"), _derive(master, b"address-mac"), _derive(master, b"release"))

    def seal(self, data: bytes, context: str) -> bytes:
        """Encrypt and authenticate ``data``; ``context`` (entry id and field) is bound in as
        associated data, so a sealed value cannot be moved to another entry or field."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return SEAL_VERSION + nonce + AESGCM(self._enc).encrypt(nonce, data, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        """The plaintext of ``sealed`` (made by ``seal`` with the same ``context``), or
        SealError. A value cut short is a SealError too, checked here: AESGCM itself raises
        a bare ValueError for a short nonce, which would reach the reviewer as a traceback."""
        if not sealed or sealed[:1] != SEAL_VERSION:
            raise SealError("unknown sealed-data format")
        if len(sealed) < 1 + NONCE_BYTES + TAG_BYTES:
            raise SealError(f"the sealed data is truncated ({len(sealed)} bytes, at least "
                            f"{1 + NONCE_BYTES + TAG_BYTES} expected)")
        nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return AESGCM(self._enc).decrypt(nonce, body, context.encode())
        except InvalidTag:
            raise SealError("authentication failed (wrong key or damaged data)") from None

    def release_mac(self, data: bytes) -> str:
        """The MAC of a release marker (mailguard.quarantine.release)."""
        return hmac.new(self._release, data, "sha256").hexdigest()

    def address_mac(self, address: str) -> str:
        """A keyed hash of an address (case-folded), for lookups without the address itself."""
        return hmac.new(self._mac, address.strip().lower().encode("utf-8", "surrogateescape"), "sha256").hexdigest()


def read_key_file(path: Path) -> KeyRing:
    """Load the master key. Raises KeyFileError (never creates anything), and
    KeyFileExposedError when group or others have any access to it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"quarantine key file {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read quarantine key file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):  # a folder would be told to chmod 600; a FIFO would hang every start
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise KeyFileError(f"quarantine key file {path} is {kind}: point [quarantine] key_file at the key file "
                           "itself")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileExposedError(
            f"quarantine key file {path} is open to other users (mode {stat.S_IMODE(mode):04o}): anyone who can "
            f"read it can read every held message. Run: chmod 600 {shlex.quote(str(path))}"
        )
    try:
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        raise KeyFileError(f"quarantine key file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read quarantine key file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text.startswith(_KEY_PREFIX):
        raise KeyFileError(f"{path} is not a mailguard quarantine key file (it must start with '{_KEY_PREFIX}')")
    try:
        master = base64.urlsafe_b64decode(text[len(_KEY_PREFIX) :].encode("ascii"))
    except ValueError:
        raise KeyFileError(f"{path}: the key is not valid base64") from None
    if len(master) != KEY_BYTES:
        raise KeyFileError(f"{path}: the key must be {KEY_BYTES} bytes, found {len(master)}")
    return KeyRing.from_master(master)


def create_key_file(path: Path) -> KeyRing:
    """Create a new random key file with mode 0600, atomically: if another process creates
    it at the same moment, both end up using the same key (the first one written)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    master = secrets.token_bytes(KEY_BYTES)
    content = (_KEY_PREFIX + base64.urlsafe_b64encode(master).decode("ascii") + "\n").encode("ascii")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if the key appeared meanwhile: never overwrite a key
        created = True
    except FileExistsError:
        created = False
    finally:
        tmp.unlink(missing_ok=True)
    if created:
        _fsync_dir(path.parent)
        log.warning(
            "created a new quarantine key file %s (mode 0600); back it up: without it, held messages cannot be read",
            path,
        )
    return read_key_file(path)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
