"""``mailguard quarantine list|show|release|delete|purge|audit|notify|rekey``.

For the part-time IT person reviewing held mail: a table to scan by eye, ``--json`` for
scripts, ids that can be shortened to a unique prefix (as with git), and exit statuses a
script can test: 0 done, 1 something was not done (unknown id, a release that failed),
2 the quarantine could not be opened (configuration, key, database).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Sequence, TextIO

from mailguard.config import Config, ConfigError, load_config
from mailguard.logsetup import setup_logging
from mailguard.quarantine import Entry, Quarantine, QuarantineError, open_quarantine
from mailguard.ops.shown import inline, printable

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
SHORT_ID = 10


def build_parser(prog: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
                        help="configuration file (TOML); its [quarantine] section is used")
    common.add_argument("--actor", metavar="NAME", default=argparse.SUPPRESS,
                        help="the person a shared account acts for, recorded in the audit log beside your OS "
                        "user name (never instead of it)")
    parser = argparse.ArgumentParser(prog=prog, parents=[common],
                                     description="Review, release and delete held messages.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = sub.add_parser("list", parents=[common], help="list held messages (newest first)")
    p.add_argument("--since", metavar="WHEN", help="only newer than this: 2d, 12h, 30m or a date like 2026-11-01")
    p.add_argument("--recipient", metavar="ADDR", help="only messages for this envelope recipient")
    p.add_argument("--rule", metavar="RULE", help="only messages where this rule fired, e.g. LOOKALIKE_SENDER_DOMAIN")
    p.add_argument("--action", dest="verdict_action", metavar="ACTION",
                   help="only this verdict action: quarantine, reject, tag or accept")
    p.add_argument("--queue-id", metavar="ID",
                   help="only the message the sender was told was \"queued as ID\" (the relay's reply, or "
                   "Postfix's queue id behind the milter); held or released unless --status says")
    p.add_argument("--status", choices=("held", "released", "all"), default=None,
                   help="held (default), released, or all")
    p.add_argument("--limit", type=int, metavar="N", help="at most N entries")
    p.add_argument("--json", action="store_true", help="one JSON object per entry, one per line")

    p = sub.add_parser("show", parents=[common], help="show why a message was held, and its headers")
    p.add_argument("id", metavar="ID")
    p.add_argument("--raw", action="store_true", help="write the decrypted message as received (audited)")
    p.add_argument("--json", action="store_true", help="the entry as one JSON object (no headers)")

    p = sub.add_parser("release", parents=[common], help="deliver held messages to their recipients")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--to", action="append", metavar="ADDR",
                   help="deliver to this address instead of the original recipients (repeatable; recorded in "
                   "the audit log)")
    p.add_argument("--force", action="store_true",
                   help="send an entry that was already released again (audited)")

    p = sub.add_parser("delete", parents=[common], help="delete held messages for good")
    p.add_argument("ids", nargs="+", metavar="ID")

    p = sub.add_parser("purge", parents=[common], help="delete entries older than the retention period")
    p.add_argument("--older-than", type=float, metavar="DAYS",
                   help="age in days (default: [quarantine] retention_days)")

    p = sub.add_parser("audit", parents=[common], help="print the audit log")
    p.add_argument("--since", metavar="WHEN", help="only newer than this: 2d, 12h or a date")
    p.add_argument("--id", metavar="ID", help="only lines about this entry (full id)")
    p.add_argument("--operation", metavar="OP",
                   help="only this operation: store, view_headers, view_raw, release, delete, purge, notify")
    p.add_argument("--limit", type=int, metavar="N", help="only the N most recent lines")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--verify", action="store_true",
                   help="check the audit log's MAC chain: exit 0 when intact, 1 naming the first broken record")

    p = sub.add_parser("rekey", parents=[common],
                       help="re-encrypt every held message with a new key (e.g. if the key may have leaked)")
    p.add_argument("new_key_file", metavar="NEW_KEY_FILE", help="the new key file; created (mode 0600) if absent")

    p = sub.add_parser("notify", parents=[common],
                       help="mail a digest of held messages (needs [quarantine] notify = true)")
    p.add_argument("--since", metavar="WHEN", default="1d", help="messages held since (default 1d)")
    p.add_argument("--dry-run", action="store_true", help="print the digests instead of sending them")
    return parser


def cli_main(argv: list[str], prog: str = "mailguard quarantine") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if getattr(args, "config", None) else Config.default()
        _setup_logging(config)
        from mailguard.ops.preflight import ServiceUser, check_quarantine

        access = check_quarantine(config, ServiceUser.lookup())
        if access:  # e.g. a quarantine created by root, opened by the service user
            raise QuarantineError("\n".join(access))
        quarantine = open_quarantine(config, actor=getattr(args, "actor", None))
    except (ConfigError, QuarantineError) as exc:
        from mailguard.ops.errors import report

        return report(prog, exc)
    except OSError as exc:  # e.g. a quarantine created by root, opened by the service user
        from mailguard.ops.errors import path_error, report

        return report(prog, path_error(exc, "the quarantine", "run it as the service's user "
                                       "(sudo -u mailguard mailguard quarantine ...) or fix the owner with "
                                       "`mailguard setup --user mailguard`"))
    try:
        return int(COMMANDS[args.action](quarantine, args, SafeText(sys.stdout)))
    except QuarantineError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_FAILED
    finally:
        quarantine.close()
        _keep_owner(config)


def _keep_owner(config: Config) -> None:
    """Run as root on a quarantine that belongs to the service user, the database files
    SQLite just created (journal, shared memory) stay the service user's, so the service
    is not locked out by a review done with sudo."""
    import os

    settings = config.section("quarantine")
    if os.geteuid() != 0 or settings["backend"] != "sqlite":
        return
    folder = config.resolve_path(settings["path"])
    try:
        owner = folder.stat()
        if owner.st_uid == 0:
            return
        for item in folder.iterdir():
            st = item.lstat()
            if item.is_file() and (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
                os.chown(item, owner.st_uid, owner.st_gid)
    except OSError:
        pass


def _setup_logging(config: Config) -> None:
    """Log as configured, so the service log also shows what people did; on a terminal
    (no log file) only warnings, since the command prints its own results."""
    settings = dict(config.section("logging"))
    if not settings["file"] and settings["level"] in ("debug", "info"):
        settings["level"] = "warning"
    try:
        setup_logging(settings, config.resolve_path)
    except OSError as exc:  # e.g. the service's log file is not writable by this user
        settings["file"] = ""
        setup_logging(settings)
        logging.getLogger("mailguard.quarantine").warning("cannot write the log file: %s", exc)


# --------------------------------------------------------------------------- commands


def cmd_list(q: Quarantine, args: argparse.Namespace, out: TextIO) -> int:
    # A sender asking about one message may ask after it was released: look at both then.
    status = args.status or ("all" if args.queue_id else "held")
    entries = q.list(
        since=args.since, recipient=args.recipient, rule=args.rule, action=args.verdict_action,
        status=None if status == "all" else status, queue_id=args.queue_id, limit=args.limit,
    )
    if args.json:
        for entry in entries:
            out.write(json.dumps(_summary(entry), ensure_ascii=False) + "\n")
        return EXIT_OK
    if not entries:
        out.write("no messages match\n")
        return EXIT_OK
    rows = [("ID", "RECEIVED (UTC)", "STATUS", "ACTION", "SCORE", "FROM", "TO", "SUBJECT", "RULES")]
    for e in entries:
        to = e.envelope.rcpt_tos[0] if e.envelope.rcpt_tos else ""
        if len(e.envelope.rcpt_tos) > 1:
            to += f" +{len(e.envelope.rcpt_tos) - 1}"
        rows.append((
            e.id[:SHORT_ID], e.created.strftime("%Y-%m-%d %H:%M"), e.status, str(e.action), f"{e.score:g}",
            _cut(e.from_header or e.envelope.mail_from, 40), _cut(to, 32), _cut(e.subject, 40), short_rules(e.rules),
        ))
    _table(rows, out)
    for e in entries:
        if e.altered:
            out.write(f"WARNING: {e.id[:SHORT_ID]}: the database's {', '.join(e.altered)} for this entry were edited; "
                      "the sealed values are shown\n")
    out.write(f"{len(entries)} message(s). Show one with: mailguard quarantine show ID\n")
    return EXIT_OK


def short_rules(rules: Sequence[str], shown: int = 2) -> str:
    """The first rules (in the order the analyzers found them) and how many more: a line a
    person can read; `show ID` has them all."""
    rest = len(rules) - shown
    return ",".join(rules[:shown]) + (f" +{rest} more" if rest > 0 else "")


def cmd_show(q: Quarantine, args: argparse.Namespace, out: TextIO) -> int:
    if args.raw:
        data = q.raw(args.id)
        if sys.stdout.isatty():  # a person looking: never let the message drive the terminal
            out.write(data.decode("utf-8", "replace").replace("\r\n", "\n"))
            print("(a terminal-safe copy; redirect to a file for the exact bytes)", file=sys.stderr)
            return EXIT_OK
        out.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return EXIT_OK
    entry = q.get(args.id)
    if args.json:
        out.write(json.dumps(entry.to_dict(), ensure_ascii=False, indent=2) + "\n")
        return EXIT_OK
    env = entry.envelope
    one = inline  # every value from the message or its envelope stays on its own line
    lines = [
        f"Entry:      {entry.id}",
        f"Received:   {entry.created:%Y-%m-%d %H:%M:%S} UTC from {one(env.client_address or '?')} "
        f"(HELO {one(env.helo or '?')})" + (f", queued as {one(entry.queue_id)}" if entry.queue_id else ""),
        f"Status:     {one(entry.status)}"
        + (f" at {entry.released_at:%Y-%m-%d %H:%M:%S} UTC" if entry.released_at else ""),
        f"Verdict:    {str(entry.action).upper()}, score {entry.score:g}",
        f"Envelope:   from <{one(env.mail_from)}> to {', '.join(f'<{one(r)}>' for r in env.rcpt_tos) or '(none)'}",
    ]
    if entry.altered:
        lines.append(f"WARNING:    the database's {', '.join(entry.altered)} for this entry were edited by someone "
                     "without the quarantine key; shown here are the sealed values")
    if entry.delivered:
        lines.append(f"Delivered:  {one(', '.join(entry.delivered))}")
    lines += [f"Subject:    {one(entry.subject)}", f"From:       {one(entry.from_header)}",
              f"Message-ID: {one(entry.message_id)}", f"Size:       {entry.size} bytes", "", "Why it was held:"]
    for finding in sorted(entry.verdict.get("findings", ()), key=lambda f: -float(f.get("score", 0))):
        lines.append(f"  - [{one(str(finding.get('rule')))} {float(finding.get('score', 0)):+g}] "
                     f"{one(str(finding.get('summary')))}")
    for error in entry.verdict.get("errors", ()):
        lines.append(f"  ! analyzer {one(str(error.get('analyzer')))} failed: {one(str(error.get('error')))}")
    out.write("\n".join(lines) + "\n\nHeaders:\n")
    headers = q.raw(entry.id, headers_only=True).decode("utf-8", "replace")
    out.write("  " + headers.rstrip().replace("\r\n", "\n").replace("\n", "\n  ") + "\n")
    out.write(f"\nRelease: mailguard quarantine release {entry.id[:SHORT_ID]}"
              f"    Delete: mailguard quarantine delete {entry.id[:SHORT_ID]}\n")
    return EXIT_OK


def cmd_release(q: Quarantine, args: argparse.Namespace, out: TextIO) -> int:
    status = EXIT_OK
    for result in q.release(args.ids, to=args.to, force=args.force):
        if result.ok:
            out.write(f"{result.entry_id}: released ({result.message})\n")
        else:
            status = EXIT_FAILED
            out.write(f"{result.entry_id}: NOT released, still held: {result.message}\n")
    return status


def cmd_delete(q: Quarantine, args: argparse.Namespace, out: TextIO) -> int:
    removed = q.delete(args.ids)
    out.write(f"deleted {removed} message(s)\n")
    return EXIT_OK


def cmd_purge(q: Quarantine, args: argparse.Namespace, out: TextIO) -> int:
    days = q.retention_days if args.older_than is None else args.older_than
    removed = q.purge(days)
    out.write(f"purged {len(removed)} message(s) older than {days:g} days\n")
    return EXIT_OK


def cmd_audit(q: Quarantine, args: argparse.Namespace, out: TextIO) -> int:
    if args.verify:
        result = q.verify_audit()
        out.write(result.describe() + "\n")
        return EXIT_OK if result.ok else EXIT_FAILED
    lines = q.audit(since=args.since, entry_id=args.id, operation=args.operation, limit=args.limit)
    if args.json:
        for line in lines:
            out.write(json.dumps(line.to_dict(), ensure_ascii=False) + "\n")
        return EXIT_OK
    rows = [("TIME (UTC)", "ACTOR", "OPERATION", "ENTRY", "RESULT", "DETAIL")]
    rows += [(a.time.strftime("%Y-%m-%d %H:%M:%S"), a.actor.replace(" ", "_") + (f"[{a.as_actor}]" if a.as_actor else ""),
              a.operation, a.entry_id, a.result, a.detail) for a in lines]
    _table(rows, out)
    return EXIT_OK


def cmd_notify(q: Quarantine, args: argparse.Namespace, out: TextIO) -> int:
    from mailguard.quarantine.notify import send_digests

    if not q.notify_settings.get("notify") and not args.dry_run:
        out.write("notification is off: set [quarantine] notify = true to send digests (or use --dry-run)\n")
        return EXIT_FAILED
    status = EXIT_OK
    for digest, error in send_digests(q, since=args.since, dry_run=args.dry_run):
        if args.dry_run:
            out.write(digest.as_bytes().decode("utf-8", "replace") + "\n")
        elif error:
            status = EXIT_FAILED
            out.write(f"digest to {digest.to}: NOT sent: {error}\n")
        else:
            out.write(f"digest to {digest.to}: sent ({len(digest.entry_ids)} message(s))\n")
    return status


def cmd_rekey(q: Quarantine, args: argparse.Namespace, out: TextIO) -> int:
    count = q.rekey(args.new_key_file)
    out.write(
        f"re-encrypted {count} message(s) with the key in {args.new_key_file}.\n"
        "Now set [quarantine] key_file to that file (or move it over the old one), restart the relay or milter,\n"
        "and back the new key file up. Keep the old key file as long as backups made with it are kept.\n"
    )
    return EXIT_OK


COMMANDS: dict[str, Any] = {
    "list": cmd_list, "show": cmd_show, "release": cmd_release, "delete": cmd_delete,
    "purge": cmd_purge, "audit": cmd_audit, "notify": cmd_notify, "rekey": cmd_rekey,
}


# --------------------------------------------------------------------------- output


class SafeText:
    """Standard output for text that came from a hostile message: control characters
    (terminal escape sequences that could retitle or rewrite the reviewer's terminal) and
    invisible format characters (right-to-left overrides that disguise a subject or a file
    name) are shown as visible \\uXXXX escapes instead of being obeyed."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(printable(text))

    def flush(self) -> None:
        self._stream.flush()


def _summary(entry: Entry) -> dict[str, Any]:
    data = entry.to_dict()
    data["reasons"] = list(entry.reasons)
    data.pop("verdict")
    return data


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    rows = [[inline(cell) for cell in row] for row in rows]  # one line per row, whatever a cell holds
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
