"""Plug-in analyzers are found without importlib.metadata when none is installed, and are
still found when one is (the quick look at the path must not miss one)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PLUGIN = '''
from mailguard.analyzers.base import Analyzer


class Shout(Analyzer):
    name = "shout"

    def analyze(self, message):
        return [self.finding("SHOUT_SUBJECT", 1.0, "The subject is in capitals")] if message.subject.isupper() else []
'''


def _run(code: str, path: list[str]) -> str:
    env_path = ":".join(path)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}).stdout.strip()


CODE = ("import sys\nfrom mailguard.analyzers import analyzer_classes\n"
        "print(sorted(analyzer_classes())[-3:], 'importlib.metadata' in sys.modules)")


def test_without_plugins_importlib_metadata_is_not_imported() -> None:
    out = _run(CODE, [str(Path(__file__).resolve().parent.parent)])
    assert out.endswith("False"), out


def test_an_installed_plugin_is_found(tmp_path: Path) -> None:
    (tmp_path / "shoutplugin.py").write_text(PLUGIN)
    info = tmp_path / "shoutplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shoutplugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mailguard.analyzers]\nshout = shoutplugin:Shout\n")
    out = _run(CODE, [str(tmp_path), str(Path(__file__).resolve().parent.parent)])
    assert "'shout'" in out and out.endswith("True"), out
