"""The [quarantine] keys: where held mail is kept, its key, retention and release path.

Read by ``mailguard.config`` without opening a database or importing the crypto."""
from __future__ import annotations

from typing import Mapping

from mailguard.options import Option

CONFIG_SCHEMA: Mapping[str, Option] = {
    "backend": Option(
        "sqlite", "str",
        "Where held messages are kept: sqlite (a database file under path, for one gateway machine) or "
        "postgresql (database_url, for several gateway machines sharing one quarantine; needs the psycopg "
        "package and the same key_file on every machine).",
        choices=("sqlite", "postgresql"),
    ),
    "database_url": Option(
        "", "str",
        "With backend = \"postgresql\": the libpq connection string, e.g. "
        "\"postgresql://mailguard@db.practice.example/mailguard\". Keep the password in ~/.pgpass or "
        "PGPASSWORD, not here.",
    ),
    "path": Option(
        "/var/lib/mailguard/quarantine", "path",
        "Folder of the quarantine database (created with mode 0700 if absent). Everything identifying in it "
        "is encrypted; back it up together with the key file, but store the two backups apart.",
    ),
    "key_file": Option(
        "/etc/mailguard/quarantine.key", "path",
        "File with the quarantine's encryption key. Created with mode 0600 on first use when absent (logged as "
        "a warning). Back it up: without it held messages cannot be read or released. A different or missing "
        "key is refused with an error before anything is written.",
    ),
    "retention_days": Option(
        30, "int", "Default age in days for 'mailguard quarantine purge': older entries are deleted.", minimum=1
    ),
    "release_host": Option(
        "", "str",
        "SMTP server that released messages are handed to, as \"host:port\" (port 25 if left out). Empty: use "
        "[relay] downstream. Released messages carry a signed release marker that mailguard's milter and relay "
        "recognise (they pass once, the marker removed), so with [milter] quarantine = \"store\" this is the "
        "Postfix smtpd the milter guards (e.g. \"127.0.0.1:25\"); the milter refuses store mode without it.",
    ),
    "release_timeout": Option(30.0, "float", "Seconds to wait for the SMTP server during a release.", minimum=1),
    "busy_timeout": Option(
        30.0, "float", "Seconds to wait for the database when another process is writing (sqlite) or to "
        "connect (postgresql), before failing (the relay then answers 451 and the sender retries).", minimum=0.1,
    ),
    "notify": Option(
        False, "bool",
        "Allow 'mailguard quarantine notify' (run it from cron) to mail a digest of held messages: sender, "
        "subject and reason, never the message body. Off by default because subjects may carry patient data.",
    ),
    "notify_to": Option(
        [], "list[str]",
        "Addresses that receive the digest of all held messages. Empty: each recipient gets a digest of the "
        "messages held for them.",
    ),
    "notify_from": Option("mailguard@localhost", "str", "Sender address of the digest."),
}
