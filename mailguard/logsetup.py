"""Logging that is safe for patient data: message ids, verdicts and rule ids only.
Subjects and addresses appear only when the operator turns them on."""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Mapping

from mailguard.options import Option

CONFIG_SCHEMA: Mapping[str, Option] = {
    "level": Option("info", "str", "Log level.", choices=("debug", "info", "warning", "error")),
    "format": Option("text", "str", "text (one readable line per event) or json (one JSON object per line).",
                     choices=("text", "json")),
    "log_subjects": Option(False, "bool", "Include message subjects in logs (may carry patient data)."),
    "log_addresses": Option(False, "bool", "Include sender and recipient addresses in logs (may carry patient data)."),
    "file": Option("", "path", "Log to this file instead of standard error. It is reopened on SIGHUP "
                   "(systemctl reload), so logrotate can move it away (postrotate: systemctl reload mailguard)."),
    "syslog": Option(False, "bool", "Also send every line to the local syslog (syslog_socket, facility mail): "
                     "journald and rsyslog read it. Under systemd, standard error already goes to the journal."),
    "syslog_socket": Option("/dev/log", "path", "The local syslog's Unix socket, for syslog = true (a chroot's or a "
                            "container's may live elsewhere)."),
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


_PLAIN = re.compile(r'[^"\\\x00-\x1f\x7f-\x9f\u2028\u2029]*')


def _value(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False)``, with the common cases (a plain string,
    an int, a float) written directly: formatting was most of a log line's cost, and one
    line is logged per message."""
    kind = type(value)
    if kind is str and _PLAIN.fullmatch(value):
        return f'"{value}"'
    if kind is int or (kind is float and value == value and value not in (float("inf"), float("-inf"))):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second: tuple[int, str] = (-1, "")  # the time text of the last second formatted

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As logging's, with the text of one second computed once (many lines share it)."""
        second = int(record.created)
        if datefmt or self._second[0] != second:
            text = time.strftime(datefmt or self.default_time_format, self.converter(record.created))
            if datefmt:
                return text
            self._second = (second, text)
        return self.default_msec_format % (self._second[1], record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            base += " " + " ".join(f"{k}={_value(v)}" for k, v in fields.items())
        return base


def setup_logging(settings: Mapping[str, Any], resolve_path: Any = None) -> None:
    """Raises OSError (naming the file) when the log file cannot be opened."""
    root = logging.getLogger("mailguard")
    root.setLevel(settings["level"].upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = _JsonFormatter() if settings["format"] == "json" else _TextFormatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = []
    if settings["file"]:
        path = resolve_path(settings["file"]) if resolve_path else settings["file"]
        handlers.append(logging.FileHandler(path))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    if settings.get("syslog"):
        from logging.handlers import SysLogHandler

        socket_path = str(settings.get("syslog_socket") or "/dev/log")
        if resolve_path:
            socket_path = str(resolve_path(socket_path))
        try:
            syslog = SysLogHandler(socket_path, facility=SysLogHandler.LOG_MAIL)
        except OSError as exc:  # no syslog daemon: say so on the main log, keep running
            root.addHandler(handlers[0])
            handlers[0].setFormatter(formatter)
            root.warning("[logging] syslog: cannot reach %s (%s); logging without syslog (set [logging] "
                         "syslog_socket, or start the syslog daemon)", socket_path, exc.strerror or exc)
            root.removeHandler(handlers[0])
        else:
            syslog.ident = "mailguard: "
            syslog.setFormatter(formatter)
            handlers.append(syslog)
    for handler in handlers:
        if not isinstance(handler.formatter, type(formatter)):
            handler.setFormatter(formatter)
        root.addHandler(handler)
    root.propagate = False


def lean_log_records() -> None:
    """For a server's process: no format here shows a record's source file, thread or
    process, and finding the caller walks the stack for every line (one per message at
    least). These are logging's own documented switches ("Optimization" in its HOWTO)."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def reopen_log_files() -> None:
    """Close and reopen the log file (on SIGHUP), so that after logrotate moved it the
    service writes to a new file instead of the rotated one."""
    for handler in logging.getLogger("mailguard").handlers:
        if isinstance(handler, logging.FileHandler):
            with handler.lock:  # type: ignore[union-attr]
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()


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


MESSAGE_FIELDS = ("way", "queue_id", "message_id", "action", "score", "rules", "errors", "scan_ms", "elapsed_ms",
                  "result")


def log_message(logger: logging.Logger, way: str, fields: Mapping[str, Any]) -> None:
    """The one line per message, the same in relay and milter: event "message" with the
    fields of MESSAGE_FIELDS first (then what is particular to the way in); metrics count it."""
    ordered: dict[str, Any] = {"way": way}
    ordered.update({k: fields[k] for k in MESSAGE_FIELDS if k in fields})
    ordered.update({k: v for k, v in fields.items() if k not in ordered})
    logger.info("message", extra={"fields": ordered})
