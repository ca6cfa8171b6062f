"""The quarantine: held messages kept encrypted, reviewable, releasable, and audited.

A held message is patient data and may be a real message a clinician needs, so: it is
stored durably before the relay answers 250 (``store`` returns only after commit and
fsync); everything identifying (message bytes, envelope, subject, findings) is sealed with
AES-256-GCM under ``[quarantine] key_file``; a release is marked done only once the
downstream server accepted it; and every store, view of content, release, deletion and
purge goes into an append-only audit log.

Library use (the relay, the milter and the ``mailguard quarantine`` command all use this)::

    from mailguard.quarantine import open_quarantine
    q = open_quarantine(config)
    entry_id = q.store(raw, envelope, verdict)
    for entry in q.list(recipient="frontdesk@practice.example"):
        print(entry.id, entry.subject, entry.rules)
    q.release([entry_id])
    q.close()
"""
from __future__ import annotations

import base64
import builtins
import json
import logging
import math
import os
import pwd
import re
import secrets
import socket
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from mailguard.config import Config
from mailguard.quarantine.schema import CONFIG_SCHEMA
from mailguard.model import Action, Envelope, Verdict
from mailguard.quarantine.backend import (
    HELD,
    RELEASED,
    STATUSES,
    AuditQuery,
    AuditRow,
    BackendError,
    EntryQuery,
    EntryRow,
    QuarantineBackend,
    RecipientRow,
)
from mailguard.quarantine.audit import AuditChain, Verification
from mailguard.quarantine.release import RELEASE_TOKEN_HEADER, release_token
from mailguard.quarantine.crypto import KeyFileError, KeyFileExposedError, KeyRing, SealError, create_key_file, read_key_file
from mailguard.quarantine.entry import (
    AuditEntry,
    Entry,
    ReleaseResult,
    envelope_of,
    header_block,
    info_for,
    parse_since,
    to_json,
)
from mailguard.quarantine.smtp import SmtpTargetError, parse_host_port, redact_addresses, send

log = logging.getLogger("mailguard.quarantine")
AUDIT_KEY = "audit_key"  # meta key of the sealed audit chain key
SEALED_PREFIX = "sealed:"  # audit detail part readable only with the quarantine key
ENTRY_ID_CHARS = 16  # an entry id: 16 hex characters (64 random bits)
RELEASE_CLAIM = "releasing:"  # meta key prefix of the claim a release holds on its entry
RELEASE_CLAIM_TIMEOUTS = 10  # a claim older than this many release_timeouts is left by a dead release


class QuarantineError(Exception):
    """The quarantine cannot do what was asked; the message says why, for the IT person.
    Raised by ``store`` when the entry is not durable (the relay then answers 451)."""


@dataclass
class Quarantine:
    """Operations on one quarantine. Safe to share between threads; open one per process.

    ``actor`` is who acts in the audit log: always the OS user (the sudo user when run
    through sudo), never what a caller claims. ``as_actor`` (``--actor``), and ``actor=`` per
    call, are recorded beside it: a shared service account can say which person it acts for.
    """

    backend: QuarantineBackend
    keys: KeyRing
    release_host: str = ""
    release_timeout: float = 30.0
    retention_days: int = 30
    actor: str = field(default_factory=lambda: default_actor())
    as_actor: str = ""
    clock: Callable[[], float] = time.time
    notify_settings: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ store

    def store(self, raw: bytes, envelope: Envelope, verdict: Verdict, *, queue_id: str = "",
              actor: str | None = None) -> str:
        """Keep ``raw`` with its envelope and verdict; return the entry id once durable.
        Raises QuarantineError otherwise, so the caller can answer 451 and lose nothing.
        ``queue_id`` is the id the sender is told ("queued as ..."): the relay's own, or the
        MTA's for the milter; a sender asking about a message quotes it (``list(queue_id=)``)."""
        entry_id = secrets.token_hex(ENTRY_ID_CHARS // 2)
        now = self.clock()
        try:
            info = info_for(raw, envelope, verdict)
            # The clear columns again, sealed: a database edit of them is found when read (_entry)
            info["stored"] = {"created": now, "size": len(raw), "queue_id": queue_id[:64]}
            row = EntryRow(
                id=entry_id,
                created=now,
                status=HELD,
                action=str(verdict.action),
                score=float(verdict.score),
                rules=tuple(verdict.rules),
                size=len(raw),
                queue_id=queue_id[:64],
                sealed_info=self.keys.seal(to_json(info), f"{entry_id}/info"),
                sealed_message=self.keys.seal(bytes(raw), f"{entry_id}/message"),
                recipients=tuple(
                    RecipientRow(i, self.keys.address_mac(r)) for i, r in enumerate(envelope.rcpt_tos)
                ),
            )
            self.backend.insert(row, self._audit_row("store", entry_id, "ok", f"{len(raw)} bytes", actor),
                                self.keys.key_id)
        except (BackendError, OSError, ValueError, TypeError) as exc:
            self._try_audit("store", "", "failed", str(exc), actor)
            log.error("quarantine store failed: %s", exc)
            raise QuarantineError(f"could not store the message in the quarantine: {exc}") from exc
        # Debug only: the relay's and the milter's one line per message already names the entry.
        log.debug("quarantined message", extra={"fields": {
            "entry_id": entry_id, "queue_id": queue_id, "message_id": verdict.message_id, "action": str(verdict.action),
            "rules": list(verdict.rules)}})
        return entry_id

    # ------------------------------------------------------------------ read

    def list(
        self,
        *,
        since: float | datetime | str | None = None,
        recipient: str | None = None,
        rule: str | None = None,
        action: Action | str | None = None,
        status: str | None = None,
        queue_id: str | None = None,
        limit: int | None = None,
        actor: str | None = None,
    ) -> builtins.list[Entry]:
        """Entries matching every given filter, newest first. ``since`` takes a time, a
        datetime, or text such as "2d", "12h" or "2026-11-01" (see ``parse_since``);
        ``queue_id`` is the id the sender was told, exactly (Postfix's are case-sensitive)."""
        if status is not None and status not in STATUSES:
            raise QuarantineError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        if action is not None and not isinstance(action, Action):
            try:
                action = Action.parse(action)
            except ValueError as exc:
                raise QuarantineError(str(exc)) from None
        query = EntryQuery(
            since=self._since(since),
            recipient_mac=self.keys.address_mac(recipient) if recipient else None,
            rule=rule.strip().upper() if rule else None,
            action=str(action) if action is not None else None,
            status=status,
            queue_id=queue_id.strip() if queue_id else None,
            limit=limit,
        )
        entries = [self._entry(row, damaged_ok=True) for row in self._backend(lambda: self.backend.select(query))]
        shown = [f"{k}={v}" for k, v in (("since", since), ("rule", query.rule), ("action", query.action),
                                           ("status", status), ("queue_id", query.queue_id), ("limit", limit))
                 if v is not None]
        if recipient:
            shown.append("recipient=(given)")
        self._backend(lambda: self.backend.append_audit(self._audit_row(
            "list", "*", "ok", f"{len(entries)} entries shown" + (f" ({', '.join(shown)})" if shown else ""),
            actor)))
        return entries

    def get(self, entry_id: str, *, actor: str | None = None) -> Entry:
        """One entry by id or unique id prefix (raises QuarantineError if unknown). Audited:
        its metadata (sender, recipients, subject, findings) is patient data too."""
        full = self.resolve(entry_id)
        row = self._backend(lambda: self.backend.fetch(full))
        if row is None:
            raise QuarantineError(f"no quarantine entry {entry_id}")
        entry = self._entry(row)
        self._backend(lambda: self.backend.append_audit(self._audit_row("view", full, "ok", "", actor)))
        return entry

    def raw(self, entry_id: str, *, headers_only: bool = False, actor: str | None = None) -> bytes:
        """The message exactly as received (or only its header block). Audited."""
        full = self.resolve(entry_id)
        operation = "view_headers" if headers_only else "view_raw"
        row = self._backend(lambda: self.backend.fetch(full, with_message=True))
        if row is None or row.sealed_message is None:
            raise QuarantineError(f"no quarantine entry {entry_id}")
        data = self._open(row.sealed_message, f"{full}/message")
        self._backend(lambda: self.backend.append_audit(self._audit_row(operation, full, "ok", "", actor)))
        return header_block(data) if headers_only else data

    def resolve(self, entry_id: str) -> str:
        """Full id from an id or a unique prefix of at least 4 characters. Anything else is
        refused before the database sees it, longer than any id included: a pasted blob of
        hex would otherwise come back as SQLite's "LIKE or GLOB pattern too complex"."""
        text = entry_id.strip().lower()
        if not 4 <= len(text) <= ENTRY_ID_CHARS or not re.fullmatch(r"[0-9a-f]+", text):
            shown = repr(entry_id[:40]) + ("..." if len(entry_id) > 40 else "")
            raise QuarantineError(f"{shown} is not a quarantine entry id (entry ids are {ENTRY_ID_CHARS} hex "
                                  "characters; give at least the first 4)")
        matches = self._backend(lambda: self.backend.match_ids(text))
        if text in matches:
            return text
        if not matches:
            raise QuarantineError(f"no quarantine entry {entry_id}")
        if len(matches) > 1:
            raise QuarantineError(f"{entry_id} is ambiguous: it starts {', '.join(matches)}; give more characters")
        return matches[0]

    def count(self) -> int:
        return self._backend(self.backend.count)

    # ------------------------------------------------------------------ release

    def release(
        self, entry_ids: Iterable[str], *, to: Sequence[str] | None = None, actor: str | None = None,
        force: bool = False,
    ) -> builtins.list[ReleaseResult]:
        """Re-inject held messages through the release SMTP server with the original envelope
        (or to the addresses ``to``). An entry is marked released only once the server
        accepted every recipient; recipients it accepted are not sent again on a retry.
        Failures are in the results and the audit log; the entry then stays held. Sending an
        entry that was already released (to anyone) again needs ``force``, and is audited
        either way; ``to`` destinations are recorded in the audit log, sealed."""
        host, port = self.release_target()
        results = []
        for given in entry_ids:
            try:
                entry_id = self.resolve(given)
            except QuarantineError as exc:
                results.append(ReleaseResult(given, False, message=str(exc)))
                continue
            results.append(self._release_one(entry_id, host, port, to, actor, force))
        return results

    def release_target(self) -> tuple[str, int]:
        if not self.release_host:
            raise QuarantineError(
                "no SMTP server to release through: set [quarantine] release_host (or [relay] downstream) "
                "to the practice's mail server as \"host:port\""
            )
        try:
            return parse_host_port(self.release_host)
        except SmtpTargetError as exc:
            raise QuarantineError(f"[quarantine] release_host: {exc}") from None

    def _release_one(
        self, entry_id: str, host: str, port: int, to: Sequence[str] | None, actor: str | None,
        force: bool = False,
    ) -> ReleaseResult:
        """Release one entry while holding its release claim in the database. Two people (or
        cron and a person, or two gateways) releasing the same entry at the same moment
        would otherwise both read it as held and both send it: the claim is taken first,
        the entry is read only then, so the second sees either the claim (refused, nothing
        sent) or the finished release ("already released")."""
        key, claim = RELEASE_CLAIM + entry_id, self._claim_text()
        holder = self._backend(lambda: self.backend.claim(key, claim, self._claim_is_stale))
        if holder != claim:
            detail = f"another release of this entry is in progress ({_describe_claim(holder)})"
            self._try_audit("release", entry_id, "refused", detail, actor)
            return ReleaseResult(entry_id, False, message=f"{detail}; nothing was sent. Once it has finished, "
                                 "`mailguard quarantine list --status all` shows whether it was released")
        try:
            return self._release_claimed(entry_id, host, port, to, actor, force)
        finally:
            try:
                self.backend.unclaim(key, claim)
            except BackendError as exc:  # the claim lapses (process gone, or after the claim timeout)
                log.error("cannot remove the quarantine release claim: %s", exc)

    def _claim_text(self) -> str:
        """Who holds a release claim: time, host, process, a random part (so a claim is
        never mistaken for another's), and the OS user, for the refusal message."""
        return f"{self.clock():.0f} {socket.gethostname()} {os.getpid()} {secrets.token_hex(4)} {self.actor}"

    def _claim_is_stale(self, claim: str) -> bool:
        """A claim left behind by a release that died (killed, machine down): its process
        on this machine is gone, or it is older than any release can take."""
        parts = claim.split(" ", 4)
        if len(parts) < 4 or not parts[0].isdigit() or not parts[2].isdigit():
            return True  # not written by _claim_text
        if self.clock() - int(parts[0]) > RELEASE_CLAIM_TIMEOUTS * self.release_timeout:
            return True
        if parts[1] == socket.gethostname():
            try:
                os.kill(int(parts[2]), 0)
            except ProcessLookupError:
                return True
            except OSError:
                return False  # alive, another user's process
        return False

    def _release_claimed(
        self, entry_id: str, host: str, port: int, to: Sequence[str] | None, actor: str | None,
        force: bool,
    ) -> ReleaseResult:
        row = self._backend(lambda: self.backend.fetch(entry_id, with_message=True))
        if row is None or row.sealed_message is None:
            return ReleaseResult(entry_id, False, message=f"no quarantine entry {entry_id}")
        info = self._info(row)
        altered = _sealed_columns(row, info)[1]
        if altered and not force:
            detail = f"its clear columns were edited in the database ({', '.join(altered)}); not sent (no --force)"
            self._try_audit("release", entry_id, "refused", detail, actor)
            return ReleaseResult(entry_id, False, message=f"{detail}. `mailguard quarantine show {entry_id[:8]}` "
                                 "shows the sealed verdict; give --force to release it anyway")
        envelope = envelope_of(info)
        sent_before = row.status == RELEASED or any(r.delivered_at is not None for r in row.recipients) \
            or self._released_with_to(entry_id)
        again = ""
        if to:
            recipients = list(to)
            pending = list(range(len(recipients)))
        else:
            recipients = list(envelope.rcpt_tos)
            if not recipients:
                return ReleaseResult(entry_id, False, message="no envelope recipients were recorded; "
                                     "release it to an address with --to")
            pending = [r.index for r in row.recipients if r.delivered_at is None]
            if (row.status == RELEASED or not pending) and not force:
                self._try_audit("release", entry_id, "refused", "already released; not sent again (no --force)",
                                actor)
                return ReleaseResult(entry_id, True, message="already released; give --force to send it again")
            if force and (row.status == RELEASED or not pending):
                pending = [r.index for r in row.recipients]
        if sent_before and to and not force:
            self._try_audit("release", entry_id, "refused", "already released; --to without --force", actor)
            return ReleaseResult(entry_id, False, message="already released; give --force to send it again "
                                 "(the audit log records every destination)")
        if sent_before and force:
            again = "again (--force); "
        data = self._released_bytes(self._open(row.sealed_message, f"{entry_id}/message"), entry_id, actor)
        targets = [recipients[i] for i in pending]
        outcome = send(host, port, envelope.mail_from, targets, data, self.release_timeout)
        accepted = [pending[i] for i in outcome.accepted]
        refused = len(outcome.refused)
        where = f"via {host}:{port}"
        if outcome.error or not accepted:
            detail = redact_addresses(f"{where}: {outcome.error or 'nothing accepted'}")
            self._try_audit("release", entry_id, "failed", detail, actor)
            log.warning("quarantine release failed", extra={"fields": {"entry_id": entry_id, "error": detail}})
            return ReleaseResult(entry_id, False, 0, refused, detail)
        now = self.clock()
        if to:
            done = not refused
            detail = (f"{again}{len(accepted)} of {len(targets)} address(es) given with --to accepted {where}; "
                      f"to {self._sealed_note(entry_id, [targets[i] for i in outcome.accepted])}")
            indexes: list[int] = []
        else:
            done = not refused and len(accepted) == len(pending)
            detail = f"{again}{len(accepted)} of {len(targets)} recipient(s) accepted {where}"
            if refused:
                detail += "; refused: " + "; ".join(redact_addresses(r) for r in outcome.refused.values())
            indexes = accepted
        audit = self._audit_row("release", entry_id, "ok" if done else "partial", detail, actor)
        self._backend(lambda: self.backend.mark_delivered(entry_id, indexes, now, done, audit))
        log.info("quarantine release", extra={"fields": {"entry_id": entry_id, "delivered": len(accepted),
                                                          "refused": refused}})
        return ReleaseResult(entry_id, done, len(accepted), refused, detail)

    def _released_with_to(self, entry_id: str) -> bool:
        """Whether the audit log records a successful release of the entry with --to (such a
        release marks no recipient delivered, so the entry row alone does not show it)."""
        rows = self._backend(lambda: self.backend.audit_rows(AuditQuery(entry_id=entry_id, operation="release")))
        return any(r.result in ("ok", "partial") and "--to accepted" in r.detail for r in rows)

    def _sealed_note(self, entry_id: str, addresses: Sequence[str]) -> str:
        """Destinations for the audit log: readable with the quarantine key only (addresses
        are patient data), shown decrypted by ``audit``."""
        sealed = self.keys.seal(json.dumps(list(addresses)).encode(), f"audit/{entry_id}/to")
        return SEALED_PREFIX + base64.urlsafe_b64encode(sealed).decode("ascii")

    def _unsealed_detail(self, entry_id: str, detail: str) -> str:
        head, marker, sealed = detail.partition(SEALED_PREFIX)
        if not marker:
            return detail
        try:
            addresses = json.loads(self.keys.open(base64.urlsafe_b64decode(sealed.encode()), f"audit/{entry_id}/to"))
            return head + ", ".join(f"<{a}>" for a in addresses)
        except (SealError, ValueError):
            return head + "[sealed destinations cannot be opened]"

    def _released_bytes(self, raw: bytes, entry_id: str, actor: str | None) -> bytes:
        """The original bytes with one header added so staff and the mail server can see the
        message was reviewed and released (added headers do not break DKIM signatures)."""
        stamp = datetime.fromtimestamp(self.clock(), timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")
        claimed = actor or self.as_actor
        who = re.sub(r"[^\w.@()-]", "_", self.actor) + (" as " + re.sub(r"[^\w.@-]", "_", claimed) if claimed else "")
        newline = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
        token = release_token(self.keys, entry_id, raw)
        return (f"X-MailGuard-Released: entry {entry_id} by {who}; {stamp}".encode() + newline
                + f"{RELEASE_TOKEN_HEADER}: {token}".encode() + newline + raw)

    # ------------------------------------------------------------------ delete, purge

    def delete(self, entry_ids: Iterable[str], *, actor: str | None = None) -> int:
        """Remove entries for good (content overwritten on disk). All ids are checked first:
        if one is unknown nothing is deleted."""
        full = [self.resolve(e) for e in entry_ids]
        audits = [self._audit_row("delete", e, "ok", "", actor) for e in full]
        removed = self._backend(lambda: self.backend.delete(full, audits))
        log.info("quarantine delete", extra={"fields": {"entry_ids": full}})
        return removed

    def purge(self, older_than_days: float | None = None, *, actor: str | None = None) -> builtins.list[str]:
        """Delete every entry older than ``older_than_days`` (default ``retention_days``),
        held or released; return their ids."""
        days = self.retention_days if older_than_days is None else older_than_days
        if not math.isfinite(days) or days < 0:  # NaN: PostgreSQL finds every time older than NaN
            raise QuarantineError(f"--older-than must be a number of days, zero or more (not {days:g})")
        cutoff = self.clock() - days * 86400
        ids = self._backend(lambda: self.backend.ids_older_than(cutoff))
        audits = [self._audit_row("purge", e, "ok", f"older than {days:g} days", actor) for e in ids]
        audits.append(self._audit_row("purge", "*", "ok", f"{len(ids)} entries older than {days:g} days removed", actor))
        self._backend(lambda: self.backend.delete(ids, audits))
        log.info("quarantine purge", extra={"fields": {"removed": len(ids), "older_than_days": days}})
        return ids

    # ------------------------------------------------------------------ key rotation

    def rekey(self, new_key_file: str | Path, *, actor: str | None = None) -> int:
        """Re-encrypt every entry with the key in ``new_key_file`` (created with mode 0600 if
        absent) in one transaction, and record it as the quarantine's key; return the number
        of entries. All or nothing: an entry that cannot be decrypted stops it with nothing
        changed. Programs still holding the old key then fail to store (451, the sender
        retries) until restarted with the new ``key_file``."""
        path = Path(new_key_file)
        try:
            new = read_key_file(path) if path.exists() else create_key_file(path)
        except KeyFileError as exc:
            raise QuarantineError(str(exc)) from None
        except OSError as exc:
            raise QuarantineError(f"cannot create the key file {path}: {exc.strerror or exc}") from None
        old = self.keys
        if new.key_id == old.key_id:
            raise QuarantineError(f"{path} holds the key already in use (key id {old.key_id})")

        def reseal(row: EntryRow) -> EntryRow:
            info_plain = self._open(row.sealed_info, f"{row.id}/info")
            message = self._open(row.sealed_message or b"", f"{row.id}/message")
            rcpts = envelope_of(json.loads(info_plain)).rcpt_tos
            return replace(
                row,
                sealed_info=new.seal(info_plain, f"{row.id}/info"),
                sealed_message=new.seal(message, f"{row.id}/message"),
                recipients=tuple(replace(r, mac=new.address_mac(rcpts[r.index])) for r in row.recipients
                                 if r.index < len(rcpts)),
            )

        audit = self._audit_row("rekey", "*", "ok", f"from key id {old.key_id} to {new.key_id}", actor)
        chain = getattr(self.backend, "chain", None)
        meta = {AUDIT_KEY: _seal_audit_key(new, chain.key)} if chain is not None else {}
        try:
            count = int(self.backend.reseal(old.key_id, new.key_id, reseal, audit, meta))
        except QuarantineError as exc:
            raise QuarantineError(f"{exc}; delete that entry or restore it from a backup, then run rekey "
                                  "again. Nothing was changed.") from None
        except BackendError as exc:
            raise QuarantineError(f"{exc}. Nothing was changed.") from None
        self.keys = new
        log.warning("quarantine re-encrypted with a new key", extra={"fields": {
            "entries": count, "old_key_id": old.key_id, "new_key_id": new.key_id}})
        return count

    # ------------------------------------------------------------------ audit

    def audit(
        self, *, since: float | datetime | str | None = None, entry_id: str | None = None,
        operation: str | None = None, limit: int | None = None,
    ) -> builtins.list[AuditEntry]:
        """The audit log, oldest first (``limit``: only the most recent lines)."""
        query = AuditQuery(since=self._since(since), entry_id=entry_id, operation=operation, limit=limit)
        return [
            AuditEntry(r.seq, datetime.fromtimestamp(r.time, timezone.utc), r.actor, r.operation, r.entry_id,
                       r.result, self._unsealed_detail(r.entry_id, r.detail), r.as_actor)
            for r in self._backend(lambda: self.backend.audit_rows(query))
        ]

    def verify_audit(self) -> Verification:
        """Check the whole MAC chain of the audit log (see mailguard.quarantine.audit)."""
        chain = getattr(self.backend, "chain", None)
        if chain is None:
            raise QuarantineError("this quarantine backend keeps no audit chain")
        rows = self._backend(lambda: self.backend.audit_rows(AuditQuery()))
        return chain.verify(rows, self._backend(self.backend.audit_head))

    def record(self, operation: str, entry_id: str, result: str, detail: str = "", *, actor: str | None = None) -> None:
        """Append a line to the audit log (for tools built on the library, e.g. digests)."""
        self._backend(lambda: self.backend.append_audit(
            self._audit_row(operation, entry_id, result, redact_addresses(detail), actor)))

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Quarantine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _since(self, since: float | datetime | str | None) -> float | None:
        if since is None or isinstance(since, (int, float)):
            return since
        if isinstance(since, datetime):
            return since.timestamp()
        try:
            return parse_since(since, self.clock())
        except ValueError as exc:
            raise QuarantineError(str(exc)) from None

    def _audit_row(self, operation: str, entry_id: str, result: str, detail: str, actor: str | None) -> AuditRow:
        claimed = re.sub(r"[\x00-\x1f\x7f]", "_", actor or self.as_actor)[:100]
        return AuditRow(self.clock(), self.actor, operation, entry_id, result, detail, as_actor=claimed)

    def _try_audit(self, operation: str, entry_id: str, result: str, detail: str, actor: str | None) -> None:
        """Record a failure; if the database itself is failing, the log line must do."""
        try:
            self.backend.append_audit(self._audit_row(operation, entry_id, result, redact_addresses(detail), actor))
        except (BackendError, OSError) as exc:
            log.error("cannot write the quarantine audit log: %s", exc)

    def _backend(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except BackendError as exc:
            raise QuarantineError(str(exc)) from exc

    def _open(self, sealed: bytes, context: str) -> bytes:
        try:
            return self.keys.open(sealed, context)
        except SealError as exc:
            raise QuarantineError(f"quarantine entry {context.split('/')[0]} cannot be decrypted: {exc}") from None

    def _info(self, row: EntryRow) -> dict[str, Any]:
        return json.loads(self._open(row.sealed_info, f"{row.id}/info"))

    def _entry(self, row: EntryRow, damaged_ok: bool = False) -> Entry:
        """The decrypted entry. With ``damaged_ok`` (listing), an entry whose sealed data
        cannot be opened, or whose clear action column holds no action, is still listed,
        marked, so one damaged row hides nothing else."""
        altered: tuple[str, ...] = ()
        try:
            action = Action.parse(row.action)
            info = self._info(row)
            row, altered = _sealed_columns(row, info)
            action = Action.parse(row.action)
        except (QuarantineError, ValueError) as exc:
            action = Action.QUARANTINE  # for the listing only: it is held in the quarantine
            if not damaged_ok:
                raise QuarantineError(f"quarantine entry {row.id} is damaged: {exc}") from None
            log.error("quarantine entry is damaged", extra={"fields": {"entry_id": row.id, "error": str(exc)}})
            info = {"subject": "[damaged entry: its details cannot be read]"}
        envelope = envelope_of(info)
        delivered = tuple(
            envelope.rcpt_tos[r.index] for r in row.recipients
            if r.delivered_at is not None and r.index < len(envelope.rcpt_tos)
        )
        return Entry(
            id=row.id,
            created=datetime.fromtimestamp(row.created, timezone.utc),
            status=row.status,
            action=action,
            score=row.score,
            rules=row.rules,
            size=row.size,
            envelope=envelope,
            subject=info.get("subject", ""),
            from_header=info.get("from", ""),
            message_id=info.get("message_id", ""),
            verdict=info.get("verdict", {}),
            released_at=datetime.fromtimestamp(row.released_at, timezone.utc) if row.released_at else None,
            delivered=delivered,
            queue_id=row.queue_id,
            altered=altered,
        )


def _sealed_columns(row: EntryRow, info: Mapping[str, Any]) -> tuple[EntryRow, tuple[str, ...]]:
    """``row`` with its clear columns (action, score, rules; time, size and queue id for
    entries stored since these were sealed too) replaced by the sealed values, and the names
    of those that differed. Whoever can write the database but has no key can edit the
    clear columns: a phish's listing made to read "tag, score 1". The sealed record is what
    the verdict was; a difference is shown as an alteration, never believed."""
    verdict = info.get("verdict")
    stored = info.get("stored")
    if not isinstance(verdict, Mapping):
        return row, ()
    sealed: dict[str, Any] = {}
    try:
        sealed["action"] = str(Action.parse(str(verdict.get("action", ""))))
        sealed["score"] = float(verdict.get("score", 0.0))
        sealed["rules"] = tuple(str(f.get("rule", "")) for f in verdict.get("findings", ()))
        if isinstance(stored, Mapping):
            sealed["created"] = float(stored["created"])
            sealed["size"] = int(stored["size"])
            sealed["queue_id"] = str(stored["queue_id"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return row, ("sealed record unreadable",)
    altered = tuple(name for name, value in sealed.items() if not _same(name, getattr(row, name), value))
    if not altered:
        return row, ()
    log.error("quarantine entry's clear columns do not match its sealed record (the database was edited)",
              extra={"fields": {"entry_id": row.id, "altered": list(altered)}})
    return replace(row, **{name: sealed[name] for name in altered}), altered


def _same(name: str, clear: Any, sealed: Any) -> bool:
    """The sealed score is rounded to 3 places (Verdict.to_dict); the others are exact."""
    if name == "score":
        try:
            return abs(float(clear) - sealed) <= 0.0006
        except (TypeError, ValueError):
            return False
    return bool(clear == sealed)


# ---------------------------------------------------------------------- opening


def open_quarantine(
    config: Config, *, actor: str | None = None, clock: Callable[[], float] = time.time
) -> Quarantine:
    """Open (creating if needed) the quarantine of ``config``'s [quarantine] section.

    The key is checked against the one recorded in the database before anything is
    written, so a wrong or missing key file is an error, never a reason to lose data.
    """
    settings = config.section("quarantine")
    key_path = config.resolve_path(settings["key_file"])
    backend, where = _open_backend(config, settings)
    try:
        keys = _bind_key(key_path, where, backend)
        if hasattr(backend, "chain"):
            backend.chain = AuditChain(_audit_key(backend, keys))
    except BaseException:
        backend.close()
        raise
    return Quarantine(
        backend=backend,
        keys=keys,
        release_host=release_host_of(config),
        release_timeout=settings["release_timeout"],
        retention_days=settings["retention_days"],
        actor=default_actor(),
        as_actor=actor or "",
        clock=clock,
        notify_settings={k: settings[k] for k in ("notify", "notify_to", "notify_from")},
    )


def _open_backend(config: Config, settings: Mapping[str, Any]) -> tuple[QuarantineBackend, str]:
    """The configured database, and how to name it in messages."""
    if settings["backend"] == "postgresql":
        if not settings["database_url"]:
            raise QuarantineError('[quarantine] backend = "postgresql" needs database_url (a libpq connection string)')
        from mailguard.quarantine.postgres import PostgresBackend

        return _call(lambda: PostgresBackend(settings["database_url"], settings["busy_timeout"])), \
            "the PostgreSQL quarantine database"
    folder = config.resolve_path(settings["path"])
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise QuarantineError(f"cannot create the quarantine folder {folder}: {exc.strerror or exc}") from None
    from mailguard.quarantine.sqlite import SQLiteBackend

    return _call(lambda: SQLiteBackend(folder, settings["busy_timeout"])), f"the quarantine in {folder}"


def _bind_key(key_path: Path, where: str, backend: QuarantineBackend) -> KeyRing:
    recorded = _call(backend.stored_key_id)
    try:
        if key_path.exists() or recorded is not None:
            keys = read_key_file(key_path)
        else:
            keys = create_key_file(key_path)
    except KeyFileExposedError as exc:
        raise QuarantineError(str(exc)) from None
    except KeyFileError as exc:
        if recorded is None:
            raise QuarantineError(f"{exc}. Set [quarantine] key_file to a readable key file.") from None
        raise QuarantineError(
            f"{exc}. {where[0].upper()}{where[1:]} holds {_call(backend.count)} entries encrypted with key id "
            f"{recorded}: restore that key file from your backup (or point [quarantine] key_file at it). "
            "Nothing was changed."
        ) from None
    except OSError as exc:
        raise QuarantineError(f"cannot create the quarantine key file {key_path}: {exc.strerror or exc}") from None
    claimed = _call(lambda: backend.claim_key_id(keys.key_id))
    if claimed != keys.key_id:
        raise QuarantineError(
            f"the key in {key_path} (key id {keys.key_id}) is not the key of {where} "
            f"(key id {claimed}, {_call(backend.count)} entries). Point [quarantine] key_file at the original key "
            "file. Nothing was changed."
        )
    return keys


def _audit_key(backend: Any, keys: KeyRing) -> bytes:
    """The audit chain's MAC key: random, kept in ``meta`` sealed with the quarantine key (so
    a rekey re-seals one value instead of re-MACing the log). Created on first use; a value
    that cannot be opened is an error, never a reason to start a new chain."""
    stored = _call(lambda: backend.meta_value(AUDIT_KEY))
    if stored is None:
        fresh = secrets.token_bytes(32)
        stored = _call(lambda: backend.start_chain(AUDIT_KEY, _seal_audit_key(keys, fresh), AuditChain(fresh)))
    try:
        return keys.open(base64.urlsafe_b64decode(stored.encode("ascii")), AUDIT_KEY)
    except (SealError, ValueError):
        raise QuarantineError("the quarantine's audit chain key cannot be opened with this key file: the database "
                              "was altered or belongs to another key") from None


def _seal_audit_key(keys: KeyRing, key: bytes) -> str:
    return base64.urlsafe_b64encode(keys.seal(key, AUDIT_KEY)).decode("ascii")


def _describe_claim(claim: str) -> str:
    """A release claim (``Quarantine._claim_text``) in words, for the person refused."""
    parts = claim.split(" ", 4)
    if len(parts) != 5 or not parts[0].isdigit():
        return "claim " + re.sub(r"[^\w .:@()-]", "_", claim[:100])
    started = datetime.fromtimestamp(int(parts[0]), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"by {parts[4]} on {parts[1]}, process {parts[2]}, since {started}"


def _call(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BackendError as exc:
        raise QuarantineError(str(exc)) from None


def release_host_of(config: Config) -> str:
    """[quarantine] release_host, or else [relay] downstream (read defensively: that
    section's keys belong to the relay)."""
    host = str(config.section("quarantine")["release_host"] or "")
    if host:
        return host
    try:
        downstream = config.section("relay").get("downstream", "")
    except KeyError:
        return ""
    return downstream if isinstance(downstream, str) else ""


def default_actor() -> str:
    """Who is acting, for the audit log: the OS user of this process by its user id (not
    $USER, which anyone can set), or, for root reached through sudo, the sudo user."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except (KeyError, OSError):
        name = f"uid {uid}"
    sudo_user = os.environ.get("SUDO_USER", "") if uid == 0 else ""
    if sudo_user and re.fullmatch(r"[\w.-]{1,64}", sudo_user):
        return f"{sudo_user} (sudo as {name})"
    return name


__all__ = [
    "AuditEntry",
    "CONFIG_SCHEMA",
    "Entry",
    "Quarantine",
    "QuarantineError",
    "ReleaseResult",
    "open_quarantine",
    "parse_since",
]
