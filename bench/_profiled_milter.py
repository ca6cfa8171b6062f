"""`mailguard milter` under cProfile with a CPU clock (time.process_time), for
bench/milter_cpu.py --profile: ``python bench/_profiled_milter.py STATS_FILE milter ARGS...``.
The stats are written when the milter stops (SIGTERM)."""
from __future__ import annotations

import cProfile
import sys
import time

from mailguard.milter.cli import cli_main

if __name__ == "__main__":
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        code = cli_main(sys.argv[3:] if sys.argv[2:3] == ["milter"] else sys.argv[2:])
    finally:
        profile.disable()
        profile.dump_stats(sys.argv[1])
    sys.exit(code)
