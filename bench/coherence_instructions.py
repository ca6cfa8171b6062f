"""Instructions per message of the language analyzer and the coherence stage (callgrind).

    python bench/coherence_instructions.py [--messages N] [--which both|language|coherence]

Wall-clock time on the shared machines swings by half between runs (bench/coherence.py
gives medians; compare them side by side). The number of instructions executed does not
depend on the load, so it tells whether a change made the work smaller. This runs the
same work as bench/coherence.py (the generated 20 KB message with 30 tracking links, each
message with addresses of its own) under ``valgrind --tool=callgrind`` twice, once scanning
no message and once scanning N (parsing N in both), and prints one JSON object with the difference divided by
N: start-up, parsing and the other analyzers are not included. Needs valgrind
(Debian: apt-get install valgrind); hash randomisation is fixed (PYTHONHASHSEED=0) so two
runs execute the same instructions. Instruction counts ignore cache misses: a smaller
count is not always a faster run, and a change that shrinks memory can be faster for the
same count.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

WHICH = ("both", "language", "coherence")


def work(which: str, count: int, scan: bool) -> None:
    """Build the scanner and parse ``count`` + 2 messages, warm every cache on a spare
    one, then (with ``scan``) scan ``count`` of them: the only difference between the two
    counted runs."""
    from coherence import with_links
    from language import typical_message

    from mailguard import Scanner

    scanner = Scanner()
    base = typical_message()
    messages = [scanner.parse(with_links(base, serial)) for serial in range(count + 2)]
    language = next(a for a in scanner.analyzers if a.name == "language")
    coherence = scanner.coherence
    assert coherence is not None
    others = [f for a in scanner.analyzers if a is not language for f in a.analyze(messages[0])]
    found = list(language.analyze(messages[0]))
    list(language.analyze(messages[-1]))
    coherence.review(messages[-1], others + found)
    for message in messages[1:count + 1] if scan else ():
        if which == "language":
            list(language.analyze(message))
        elif which == "coherence":
            coherence.review(message, others + found)
        else:
            coherence.review(message, others + list(language.analyze(message)))


def counted(which: str, count: int, scan: bool, valgrind: str) -> int:
    """Instructions of one whole run of ``work`` under callgrind."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(
            [valgrind, "--tool=callgrind", f"--callgrind-out-file={scratch}/out", sys.executable,
             __file__, "--run", which, str(count), "scan" if scan else "parse"],
            env=env, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--which", choices=WHICH, default="both")
    parser.add_argument("--run", nargs=3, metavar=("WHICH", "COUNT", "SCAN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        work(args.run[0], int(args.run[1]), args.run[2] == "scan")
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind not found: apt-get install valgrind")
    work(args.which, 0, scan=False)  # fills the language build cache, so both counted runs load it
    base = counted(args.which, args.messages, False, valgrind)
    total = counted(args.which, args.messages, True, valgrind)
    print(json.dumps({
        "which": args.which,
        "messages": args.messages,
        "instructions_per_message": round((total - base) / args.messages),
        "instructions_without_scanning": base,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
