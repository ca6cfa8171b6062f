"""Logging that is safe for patient data: message ids, verdicts and rule ids only.
Subjects and addresses appear only when the operator turns them on."""
from __future__ import annotations

import json
import logging
import sys
from typing import Any, Mapping

from mailguard.options import Option

CONFIG_SCHEMA: Mapping[str, Option] = {
    "level": Option("info", "str", "Log level.", choices=("debug", "info", "warning", "error")),
    "format": Option("text", "str", "text (one readable line per event) or json (one JSON object per line).",
                     choices=("text", "json")),
    "log_subjects": Option(False, "bool", "Include message subjects in logs (may carry patient data)."),
    "log_addresses": Option(False, "bool", "Include sender and recipient addresses in logs (may carry patient data)."),
    "file": Option("", "path", "Log to this file instead of standard error."),
}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}) or {})
        return json.dumps(out, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            base += " " + " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in fields.items())
        return base


def setup_logging(settings: Mapping[str, Any], resolve_path: Any = None) -> None:
    root = logging.getLogger("mailguard")
    root.setLevel(settings["level"].upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if settings["file"]:
        path = resolve_path(settings["file"]) if resolve_path else settings["file"]
        handler: logging.Handler = logging.FileHandler(path)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if settings["format"] == "json" else _TextFormatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.propagate = False


def verdict_log_fields(
    verdict: Any, settings: Mapping[str, Any], subject: str = "", mail_from: str = "", rcpt_tos: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The fields of the one line logged per message; never a body."""
    fields: dict[str, Any] = {
        "message_id": verdict.message_id,
        "action": str(verdict.action),
        "score": verdict.score,
        "rules": list(verdict.rules),
        "errors": [e.analyzer for e in verdict.errors],
        "scan_ms": round(verdict.elapsed_ms, 1),
    }
    if settings.get("log_subjects"):
        fields["subject"] = subject
    if settings.get("log_addresses"):
        fields["mail_from"] = mail_from
        fields["rcpt_tos"] = list(rcpt_tos)
    return fields
