"""``mailguard serve``: the SMTP relay in front of the practice's mail server.

The command line only; the [relay] keys are in ``mailguard.relay.schema`` (so that loading a
configuration does not import the SMTP libraries), the server in ``mailguard.relay.server``
and the per-message logic in ``mailguard.relay.handler``.
"""
from __future__ import annotations

import argparse
import sys



def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the SMTP relay: scan inbound mail and pass it on to the practice's mail server. "
        "SIGHUP reloads the configuration and rules; SIGTERM finishes messages in transfer, then exits.",
    )
    parser.add_argument("--config", "-c", metavar="FILE", help="configuration file (TOML)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="override [relay] listen")
    parser.add_argument("--downstream", metavar="HOST:PORT", help="override [relay] downstream")
    return parser


def cli_main(argv: list[str], prog: str = "mailguard serve") -> int:
    args = build_parser(prog).parse_args(argv)
    from mailguard.config import ConfigError
    from mailguard.relay.server import run

    try:
        return run(args.config, listen=args.listen, downstream=args.downstream)
    except ConfigError as exc:
        print(f"mailguard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
