"""``mailguard daemon``: build the scanner once, fork workers, serve scans on a Unix socket.

    mailguard daemon [--config FILE] [--socket PATH] [--workers N]

Runs in the foreground (systemd, runit and containers supervise it; a log line says when
it is ready); SIGTERM or Ctrl-C stops it and removes the socket.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence


def cli_main(argv: Sequence[str], prog: str = "mailguard daemon") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Scanning daemon: the scanner built once, workers forked after.")
    parser.add_argument("--config", "-c", metavar="FILE", help="configuration file (TOML)")
    parser.add_argument("--socket", metavar="PATH", help="Unix socket (default: [daemon] socket)")
    parser.add_argument("--workers", "-w", type=int, metavar="N", help="worker processes (default: [daemon] workers)")
    args = parser.parse_args(list(argv))

    from mailguard.config import ConfigError, Config, load_config
    from mailguard.daemon.protocol import config_fingerprint
    from mailguard.daemon.schema import socket_path
    from mailguard.daemon.server import DaemonError, DaemonServer
    from mailguard.logsetup import setup_logging

    try:
        config = load_config(args.config) if args.config else Config.default()
        settings = config.section("daemon")
        mode = int(str(settings["socket_mode"]), 8)
    except ConfigError as exc:
        print(f"mailguard: {exc}", file=sys.stderr)
        return 2
    except ValueError:
        print(f"mailguard: [daemon] socket_mode: expected an octal mode such as \"0600\", got {settings['socket_mode']!r}",
              file=sys.stderr)
        return 2
    setup_logging(config.section("logging"), config.resolve_path)
    from mailguard.ops.preflight import check_libraries

    for problem in check_libraries():  # (opened by the workers only at their first attachment)
        print(f"mailguard daemon: {problem}", file=sys.stderr)
        return 2
    base = Path(args.config).resolve().parent if args.config else None
    path = Path(args.socket) if args.socket else socket_path(settings, base)
    workers = args.workers if args.workers is not None else int(settings["workers"])
    server = DaemonServer(
        config=config, socket_path=path, workers=workers or os.cpu_count() or 1,
        fingerprint=config_fingerprint(args.config), socket_mode=mode,
        max_message_bytes=int(settings["max_message_bytes"]), idle_timeout_s=float(settings["idle_timeout_s"]),
        max_requests_per_worker=int(settings["max_requests_per_worker"]),
    )
    try:
        return server.run()
    except ConfigError as exc:
        print(f"mailguard: {exc}", file=sys.stderr)
        return 2
    except (DaemonError, OSError) as exc:
        print(f"mailguard daemon: {exc}", file=sys.stderr)
        return 2
