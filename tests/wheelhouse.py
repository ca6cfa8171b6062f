"""A local wheelhouse of mailguard's dependencies, repacked from the test environment.

The deploy test follows the README: a fresh venv, then `pip install` of mailguard. Tests reach
only loopback, so pip must not ask a package index; instead it gets `--no-index --find-links`
to a folder of wheels made here from the distributions already installed in the environment
running the tests (the ones `pip install '.[test]'` fetched). An installed distribution is a
wheel unpacked: its files sit under site-packages beside a `.dist-info` folder whose WHEEL file
keeps the original tags and whose RECORD lists the files, so zipping them back gives a wheel pip
installs as it would the downloaded one (dependency resolution, console scripts and all).
"""
from __future__ import annotations

import base64
import hashlib
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def dependency_closure(project: str) -> list[metadata.Distribution]:
    """The installed distributions `project` needs (no extras), found by following Requires-Dist."""
    environment = default_environment()
    seen: dict[str, metadata.Distribution] = {}
    pending = [project]
    while pending:
        name = canonicalize_name(pending.pop())
        if name in seen:
            continue
        dist = metadata.distribution(name)
        seen[name] = dist
        for line in dist.requires or ():
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({**environment, "extra": ""}):
                pending.append(requirement.name)
    return [dist for name, dist in seen.items() if name != canonicalize_name(project)]


def _wheel_name(dist: metadata.Distribution) -> str:
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    if not tags:
        raise ValueError(f"{dist.metadata['Name']}: no Tag in its WHEEL file (not installed from a wheel)")
    pythons, abis, platforms = (sorted({tag.split("-")[i] for tag in tags}) for i in range(3))
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    return f"{name}-{dist.version}-{'.'.join(pythons)}-{'.'.join(abis)}-{'.'.join(platforms)}.whl"


def repack(dist: metadata.Distribution, folder: Path) -> Path:
    """Zip one installed distribution back into a wheel in `folder`, with a fresh RECORD."""
    files = [f for f in dist.files or () if not str(f).startswith("..") and not str(f).endswith(".pyc")]
    record_name = next(str(f) for f in files if str(f).endswith(".dist-info/RECORD"))
    target = folder / _wheel_name(dist)
    rows = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in files:
            path = Path(dist.locate_file(file))
            if str(file) == record_name or not path.is_file():
                continue
            data = path.read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            wheel.writestr(str(file), data)
            rows.append(f"{file},sha256={digest},{len(data)}")
        rows.append(f"{record_name},,")
        wheel.writestr(record_name, "\n".join(rows) + "\n")
    return target


def build(project: str, folder: Path) -> list[Path]:
    """Wheels of every installed dependency of `project` in `folder` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [repack(dist, folder) for dist in dependency_closure(project)]
