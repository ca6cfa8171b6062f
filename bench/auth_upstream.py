"""How many flagged legitimate messages a proven identity clears, with results reused from
a trusted upstream server ([auth] trusted_authserv_ids).

    python bench/auth_upstream.py [FOLDER ...]   (default: the shared notifications and dev ham)

The shared corpora had their Authentication-Results removed (see the corpus README), so no
message carries a trusted upstream's results. Two figures are therefore printed per folder:

- ``carrying_trusted_results``: messages that already carry an Authentication-Results
  header at all (what could be measured on real upstream results);
- a simulation: each message scanned as it is, and again with the header a trusted upstream
  would have written had the message passed DMARC for its From domain
  (``Authentication-Results: upstream.bench; dmarc=pass header.from=<From domain>``).
  ``flagged`` counts messages tagged or worse; ``proven_among_flagged`` those whose identity
  the header proves; ``cleared`` those flagged without and not flagged with it.

The simulation assumes every legitimate message passes DMARC, which modern brand mail
mostly does and 2002-era mail did not; clearing itself is the coherence stage's work
(issue 14), so ``cleared`` stays 0 until it reads ``proven_domain``. No DNS is used.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mailguard  # noqa: E402
from mailguard.config import Config  # noqa: E402
from mailguard.model import Action  # noqa: E402

SHARED = Path("/work/shared/corpus")
UPSTREAM = "upstream.bench"


def with_upstream(raw: bytes, domain: str) -> bytes:
    eol = b"\r\n" if b"\r\n" in raw[:2000] else b"\n"
    return f"Authentication-Results: {UPSTREAM}; dmarc=pass header.from={domain}".encode() + eol + raw


def evaluate(folder: Path, plain: mailguard.Scanner, trusting: mailguard.Scanner) -> dict[str, object]:
    files = sorted(p for p in folder.rglob("*.eml") if p.is_file())
    flagged = proven_flagged = cleared = carrying = 0
    cleared_rules: dict[str, int] = {}
    for path in files:
        raw = path.read_bytes()
        head = raw.split(b"\n\n", 1)[0].lower()
        carrying += b"\nauthentication-results:" in b"\n" + head
        before = plain.scan(raw)
        if before.action < Action.TAG:
            continue
        flagged += 1
        message = plain.parse(raw)
        domain = message.from_address.domain if message.from_address else ""
        if not domain:
            continue
        after = trusting.scan(with_upstream(raw, domain))
        if after.auth is not None and after.auth.proven_domain:
            proven_flagged += 1
        if after.action < Action.TAG:
            cleared += 1
            for rule in before.rules:
                cleared_rules[rule] = cleared_rules.get(rule, 0) + 1
    return {"folder": str(folder), "messages": len(files), "carrying_trusted_results": carrying,
            "flagged": flagged, "proven_among_flagged": proven_flagged, "cleared": cleared,
            "cleared_rules": dict(sorted(cleared_rules.items(), key=lambda kv: -kv[1])[:10])}


def main() -> int:
    folders = [Path(a) for a in sys.argv[1:]] or [SHARED / "notifications", SHARED / "dev" / "ham"]
    plain = mailguard.Scanner(Config.from_dict({"auth": {"enabled": False}}))
    trusting = mailguard.Scanner(Config.from_dict({"auth": {"trusted_authserv_ids": [UPSTREAM]}}))
    print(json.dumps({"bench": "auth_upstream", "results": [evaluate(f, plain, trusting) for f in folders]},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
