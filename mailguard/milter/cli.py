"""``mailguard milter``: the command line that builds the engine and runs the server."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from mailguard.config import Config, ConfigError, load_config
from mailguard.logsetup import setup_logging
from mailguard.milter.engine import Engine
from mailguard.milter.server import serve


def cli_main(argv: list[str], prog: str = "mailguard milter") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Run the milter for Postfix or Sendmail.")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default: built-in settings)")
    parser.add_argument("--listen", metavar="SPEC", help="override [milter] listen, e.g. inet:127.0.0.1:8894")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else Config.default()
        if args.listen:
            data = config.to_dict()
            data["milter"]["listen"] = args.listen
            config = Config.from_dict(data, config.source)
        setup_logging(config.section("logging"), config.resolve_path)
        engine = Engine.build(config)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. the quarantine cannot be opened: say so, do not start
        print(f"{prog}: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(engine, Path(args.config) if args.config else None))
    except OSError as exc:
        print(f"{prog}: cannot listen on {engine.settings.listen}: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.close()
    return 0
