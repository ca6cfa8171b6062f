"""``mailguard milter``: the command line that builds the engine and runs the server."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from mailguard.config import Config, ConfigError, load_config
from mailguard.milter.engine import Engine
from mailguard.milter.server import MilterServer, serve
from mailguard.ops.unixsocket import SocketPathTaken


def cli_main(argv: list[str], prog: str = "mailguard milter") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Run the milter for Postfix or Sendmail.")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default: built-in settings)")
    parser.add_argument("--listen", metavar="SPEC", help="override [milter] listen, e.g. inet:127.0.0.1:8894")
    args = parser.parse_args(argv)
    from mailguard.ops.errors import listen_error, path_error, report
    from mailguard.ops.startup import StartupFailed, opening_quarantine, prepare, start_metrics

    try:
        config = load_config(args.config) if args.config else Config.default()
        if args.listen:
            data = config.to_dict()
            data["milter"]["listen"] = args.listen
            config = Config.from_dict(data, config.source)
        prepare(config, "milter")
        with opening_quarantine():
            engine = Engine.build(config)
    except (ConfigError, StartupFailed) as exc:
        return report(prog, exc)
    try:
        metrics = start_metrics(config, "milter")
    except StartupFailed as exc:
        engine.close()
        return report(prog, exc)

    def ready(server: MilterServer) -> None:
        from mailguard.ops.sdnotify import notify

        if metrics is not None:
            metrics.watch(queue_depth=lambda: sum(1 for s in list(server.sessions) if s.deciding),
                          quarantine_size=engine.quarantine.count if engine.quarantine is not None else None)
        notify("READY=1", f"STATUS=milter listening on {server.address}")

    try:
        asyncio.run(serve(engine, Path(args.config) if args.config else None, ready=ready))
    except SocketPathTaken as exc:
        return report(prog, exc)
    except OSError as exc:
        where = f"[milter] listen in {args.config or 'the configuration'}"
        address = str(engine.settings.listen).partition(":")[2]
        if engine.settings.listen.family == "unix":
            if isinstance(exc, FileNotFoundError):
                return report(prog, path_error(exc, f"the folder of the milter socket, {where}",
                                               "create the folder (Postfix's user must be able to reach it) "
                                               "or correct the path"))
            return report(prog, path_error(exc, f"the milter socket, {where}"))
        return report(prog, listen_error(exc, where, address))
    finally:
        engine.close()
    return 0

