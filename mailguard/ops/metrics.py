"""Prometheus metrics for the relay and the milter, and ``mailguard stats`` for a person.

The counters are fed by the one log line per message (event "message", the same fields in
relay and milter), through a logging handler: the metrics count exactly what the log says,
and the mail paths need no second set of calls. Every ``Metrics`` has its own registry (no
process-wide state), so tests and reloads never double-register.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("mailguard.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class Metrics:
    """The gateway's counters. ``way`` ("relay" or "milter") is a label on every series."""

    way: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r, labels = self.registry, ("way",)
        self.messages = Counter("mailguard_messages", "Messages decided, by verdict action",
                                ("way", "action"), registry=r)
        self.results = Counter("mailguard_results", "What happened to each message (delivered, quarantined, "
                               "rejected, tempfail, ...)", ("way", "result"), registry=r)
        self.rules = Counter("mailguard_rule_hits", "Messages on which a rule fired, by rule id",
                             ("way", "rule"), registry=r)
        self.latency = Histogram("mailguard_scan_seconds", "Time to scan one message", labels,
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.elapsed = Histogram("mailguard_message_seconds", "Time from end of data to the answer "
                                 "(scan, store or forward)", labels, buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("mailguard_errors", "Errors logged (analyzer failures, store or forward errors)",
                              ("way", "kind"), registry=r)
        self.tempfails = Counter("mailguard_tempfails", "Messages answered with a temporary failure "
                                 "(the sender retries)", labels, registry=r)
        self.queue_depth = Gauge("mailguard_queue_depth", "Messages waiting for or in scanning", labels,
                                 registry=r)
        self.quarantine_size = Gauge("mailguard_quarantine_entries", "Entries held in the quarantine", labels,
                                     registry=r)

    def observe_message(self, fields: dict[str, Any]) -> None:
        way = self.way
        if fields.get("action"):
            self.messages.labels(way, str(fields["action"])).inc()
        result = str(fields.get("result", ""))
        if result:
            self.results.labels(way, result).inc()
        if result == "tempfail":
            self.tempfails.labels(way).inc()
        for rule in fields.get("rules") or ():
            self.rules.labels(way, str(rule).partition("=")[0]).inc()
        for analyzer in fields.get("errors") or ():
            self.errors.labels(way, f"analyzer:{analyzer}").inc()
        if isinstance(fields.get("scan_ms"), (int, float)):
            self.latency.labels(way).observe(fields["scan_ms"] / 1000.0)
        if isinstance(fields.get("elapsed_ms"), (int, float)):
            self.elapsed.labels(way).observe(fields["elapsed_ms"] / 1000.0)

    def watch(self, queue_depth: Callable[[], float] | None = None,
              quarantine_size: Callable[[], float] | None = None) -> None:
        """Gauges read when scraped, from the running server."""
        if queue_depth is not None:
            self.queue_depth.labels(self.way).set_function(_safe(queue_depth))
        if quarantine_size is not None:
            self.quarantine_size.labels(self.way).set_function(_safe(quarantine_size))


def _safe(fn: Callable[[], float]) -> Callable[[], float]:
    def read() -> float:
        try:
            return float(fn())
        except Exception:  # a busy database must not break the scrape
            return float("nan")

    return read


class MetricsLogHandler(logging.Handler):
    """Counts every per-message log line and every error line."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(logging.DEBUG)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = getattr(record, "fields", None) or {}
            if record.msg == "message" and fields:
                self.metrics.observe_message(fields)
            elif record.levelno >= logging.ERROR:
                self.metrics.errors.labels(self.metrics.way, record.name.rpartition(".")[2]).inc()
        except Exception:  # pragma: no cover - never let metrics break logging
            self.handleError(record)


def start_metrics(config: Any, way: str) -> Metrics | None:
    """Start the endpoint of [metrics] listen (None when it is empty); raises OSError when the
    port cannot be opened. The per-message lines are counted whatever the log level."""
    text = config.section("metrics")["listen"].strip()
    if not text:
        return None
    host, _, port = text.rpartition(":")
    metrics = Metrics(way)
    server, _thread = start_http_server(int(port), host.strip("[]"), registry=metrics.registry)
    logger = logging.getLogger("mailguard")
    logger.addHandler(MetricsLogHandler(metrics))
    # The level filter moves from the logger to its output handlers, so that info lines
    # (one per message) reach the metrics even when only warnings are written out.
    wanted = logger.level
    for handler in logger.handlers:
        if not isinstance(handler, MetricsLogHandler):
            handler.setLevel(max(handler.level, wanted))
    logger.setLevel(min(wanted, logging.INFO))
    bound_host, bound_port = server.server_address[:2]
    log.info("metrics listening", extra={"fields": {"host": bound_host, "port": bound_port}})
    return metrics


# --------------------------------------------------------------------------- mailguard stats


def cli_main(argv: Sequence[str], prog: str = "mailguard stats") -> int:
    """Read the running service's endpoint and print it for a person."""
    from urllib.error import URLError
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    from mailguard.config import Config, ConfigError, load_config
    from mailguard.ops.errors import report

    parser = argparse.ArgumentParser(prog=prog, description="Counters of the running relay or milter "
                                     "(from its [metrics] endpoint): messages by action, top rules, latency.")
    parser.add_argument("--config", "-c", metavar="FILE", help="configuration file (its [metrics] listen is read)")
    parser.add_argument("--url", metavar="URL", help="the endpoint, e.g. http://127.0.0.1:9464/metrics")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="rules to show (default 10)")
    args = parser.parse_args(list(argv))
    url = args.url
    if not url:
        try:
            config = load_config(args.config) if args.config else Config.default()
        except ConfigError as exc:
            return report(prog, exc)
        listen = config.section("metrics")["listen"]
        if not listen:
            where = args.config or "the configuration"
            return report(prog, f"[metrics] listen is empty in {where}; set it (e.g. \"127.0.0.1:9464\"), "
                                "reload the service, or pass --url")
        url = f"http://{listen}/metrics"
    try:
        with urlopen(url, timeout=10) as response:  # noqa: S310 - a loopback URL the operator gave
            text = response.read().decode("utf-8")
    except (URLError, OSError) as exc:
        return report(prog, f"{url}: cannot read the metrics ({getattr(exc, 'reason', exc)}); "
                            "is the service running with [metrics] listen set?")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    sys.stdout.write(render_stats(samples, args.top))
    return 0


def render_stats(samples: dict[str, list[tuple[dict[str, str], float]]], top: int = 10) -> str:
    def by(name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, value in samples.get(name, ()):
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + value
        return out

    def total(name: str) -> float:
        return sum(v for _, v in samples.get(name, ()))

    lines = []
    actions = by("mailguard_messages_total", "action")
    lines.append(f"messages: {int(sum(actions.values()))}  " +
                 "  ".join(f"{a}={int(n)}" for a, n in sorted(actions.items())))
    results = by("mailguard_results_total", "result")
    if results:
        lines.append("results:  " + "  ".join(f"{r}={int(n)}" for r, n in sorted(results.items())))
    lines.append(f"tempfails: {int(total('mailguard_tempfails_total'))}  errors: {int(total('mailguard_errors_total'))}")
    count = total("mailguard_scan_seconds_count")
    if count:
        mean_ms = total("mailguard_scan_seconds_sum") / count * 1000
        lines.append(f"scan time: mean {mean_ms:.1f} ms over {int(count)} scans, "
                     f"95% under {_quantile(samples.get('mailguard_scan_seconds_bucket', []), 0.95)}")
    lines.append(f"queue depth: {int(total('mailguard_queue_depth'))}  "
                 f"quarantine entries: {int(total('mailguard_quarantine_entries'))}")
    rules = sorted(by("mailguard_rule_hits_total", "rule").items(), key=lambda kv: -kv[1])[:top]
    if rules:
        lines.append(f"top rules:")
        lines += [f"  {int(n):>7}  {rule}" for rule, n in rules]
    return "\n".join(lines) + "\n"


def _quantile(buckets: list[tuple[dict[str, str], float]], q: float) -> str:
    merged: dict[float, float] = {}
    for labels, value in buckets:
        le = float(labels.get("le", "inf"))
        merged[le] = merged.get(le, 0.0) + value
    if not merged:
        return "?"
    ordered = sorted(merged.items())
    target = ordered[-1][1] * q
    for le, cumulative in ordered:
        if cumulative >= target:
            return "more than 120 s" if le == float("inf") else f"{le * 1000:g} ms"
    return "?"
