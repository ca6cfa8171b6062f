"""Where the shipped detection data lives.

``rules/`` and ``yara/`` sit at the top of the source tree so operators can read them, and
are copied into the wheel as ``mailguard/rules`` and ``mailguard/yara``. This finds them in
either layout, so a source checkout and an installed wheel behave the same.

pathlib is imported by the functions that return paths, not by this module: `mailguard
check` through the daemon finds its socket in the cache folder (``cache_folder``) before it
imports anything it does not need.
"""
from __future__ import annotations

import os
import stat
from functools import lru_cache

TYPE_CHECKING = False  # typing and pathlib only for type checkers (see above)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Callable, Iterable, TypeVar

    T = TypeVar("T")


def data_dir(name: str) -> Path:
    """The built-in data folder ``name`` ("rules" or "yara")."""
    package = _package_dir()
    for candidate in (package / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"mailguard's built-in '{name}' folder is missing (looked in {package / name} and "
        f"{package.parent / name}); reinstall mailguard"
    )


@lru_cache(maxsize=1)
def _package_dir() -> Path:
    from pathlib import Path

    return Path(__file__).resolve().parent


def rules_file(filename: str) -> Path:
    """A file in the built-in ``rules/`` folder."""
    return data_dir("rules") / filename


# --------------------------------------------------------------------------- build cache
#
# Building the scanner compiles data that changes only when the rules or the libraries do
# (the language phrases' automaton: 0.4-0.6 s of a 1 s cold start). A compiled copy is kept
# in a cache folder, keyed by a hash of everything it was built from, so a changed rule, a
# new library or a new mailguard never meets an old copy. The folder is safe to delete at
# any time, and a folder that cannot be read or written only means building again.

CACHE_ENV = "MAILGUARD_CACHE_DIR"  # a folder, or "off" to never read or write a cache


def cache_folder() -> str | None:
    """$MAILGUARD_CACHE_DIR, else $XDG_CACHE_HOME/mailguard, else ~/.cache/mailguard;
    None when caching is off (MAILGUARD_CACHE_DIR=off) or no home is known."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen.lower() in ("off", "none", "0"):
        return None
    if chosen:
        return chosen
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg:
        return os.path.join(xdg, "mailguard")
    home = os.path.expanduser("~")
    return os.path.join(home, ".cache", "mailguard") if home != "~" else None


def trusted(path: str) -> bool:
    """A cached file is used only when it and its folder belong to this user and nobody
    else may write them: a cache others can write would let them run code (a pickle) or
    send this user's messages to a socket of theirs."""
    try:
        for item in (os.path.dirname(path) or ".", path):
            info = os.stat(item)
            if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return False
    except OSError:
        return False
    return True


_CACHE_FORMAT = "1"


def cache_dir() -> Path | None:
    """``cache_folder()`` as a Path."""
    from pathlib import Path

    folder = cache_folder()
    return Path(folder) if folder is not None else None


def cache_key(kind: str, inputs: Iterable[Path], extra: Iterable[str] = ()) -> str:
    """A hash of the inputs' contents, their names, mailguard's and Python's versions and
    ``extra`` (library versions, options that change what is built)."""
    import hashlib
    import sys

    from mailguard import __version__

    digest = hashlib.sha256(f"{_CACHE_FORMAT}\0{kind}\0{__version__}\0{sys.version}\0".encode())
    for item in extra:
        digest.update(f"{item}\0".encode())
    for path in inputs:
        digest.update(f"{path}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


def cached_build(kind: str, key: str, build: Callable[[], T],
                 dump: Callable[[T], bytes] | None = None, load: Callable[[bytes], T] | None = None) -> T:
    """``build()``, or the copy cached under ``kind``/``key``; stores a new build for next
    time. Never fails because of the cache: any problem reading or writing it just builds."""
    import pickle
    import tempfile

    folder = cache_dir()
    path = folder / f"{kind}-{key}.bin" if folder is not None else None
    if path is not None and trusted(str(path)):
        try:
            data = path.read_bytes()
            return load(data) if load else pickle.loads(data)
        except Exception:  # noqa: BLE001 - damaged or from another build: rebuild
            pass
    value = build()
    if path is None:
        return value
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = dump(value) if dump else pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        handle, temporary = tempfile.mkstemp(prefix=f".{kind}-", dir=folder)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)  # readers see the old file or the whole new one
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        for stale in folder.glob(f"{kind}-*.bin"):  # older builds of the same thing
            if stale != path:
                stale.unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - read-only, full or foreign folder: the build stands
        pass
    return value
