"""Setting up one SMTP session object without aiosmtpd's per-connection introspection.

aiosmtpd's ``SMTP.__init__`` finds its AUTH mechanisms, handler hooks and command methods
with ``inspect.getmembers`` (which evaluates every property of the session, among them
one that takes a ``max`` over the command size table), ``dir`` and ``inspect.signature``,
and logs the AUTH mechanisms, for every connection: a quarter of the relay's own CPU per
message when each message comes on its own connection. What it finds is the same for
every session of one class and handler, so the first session runs aiosmtpd's own
``__init__`` and records it (``Layout``); later ones set the same attributes directly.

The attributes set are those of aiosmtpd 1.4.6's ``__init__`` for the arguments the relay
passes; with any other aiosmtpd version every session takes aiosmtpd's own path, and a
test compares the two paths' attributes (tests/test_relay_session_init.py).
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Callable

import aiosmtpd
from aiosmtpd.smtp import SMTP, _AuthMechAttr, login_always_fail

KNOWN_AIOSMTPD = "1.4.6"


@dataclass(frozen=True)
class Layout:
    """What aiosmtpd's ``__init__`` found by introspection for one class and handler."""

    auth: tuple[tuple[str, str, bool], ...]  # (mechanism, method name, built into the session)
    hooks: tuple[tuple[str, Callable[..., Any]], ...]
    ehlo_hook_ver: str | None
    commands: tuple[str, ...]

    @classmethod
    def of(cls, smtp: SMTP) -> "Layout":
        return cls(
            auth=tuple((mech, impl.method.__name__, impl.is_builtin) for mech, impl in smtp._auth_methods.items()),
            hooks=tuple(smtp._handle_hooks.items()),
            ehlo_hook_ver=smtp._ehlo_hook_ver,
            commands=tuple(smtp._smtp_methods),
        )


def init_session(smtp: SMTP, handler: Any, layouts: dict[type, Layout] | None, **kwargs: Any) -> None:
    """``SMTP.__init__(smtp, handler, **kwargs)``, quickly once ``layouts`` (kept by the
    handler, so nothing global) knows the session's class."""
    known = aiosmtpd.__version__ == KNOWN_AIOSMTPD and layouts is not None
    layout = layouts.get(type(smtp)) if known and layouts is not None else None
    if layout is None:
        SMTP.__init__(smtp, handler, **kwargs)
        if known and layouts is not None:
            layouts[type(smtp)] = Layout.of(smtp)
        return
    _init_known(smtp, handler, layout, **kwargs)


def _init_known(smtp: SMTP, handler: Any, layout: Layout, *, loop: asyncio.AbstractEventLoop,
                data_size_limit: int | None, enable_SMTPUTF8: bool, hostname: str | None, ident: str | None,
                tls_context: ssl.SSLContext | None, require_starttls: bool, timeout: float) -> None:
    smtp.__ident__ = ident or aiosmtpd.smtp.__ident__
    smtp.loop = loop
    asyncio.StreamReaderProtocol.__init__(
        smtp, asyncio.StreamReader(loop=loop, limit=smtp.line_length_limit),
        client_connected_cb=smtp._cb_client_connected, loop=loop)
    smtp.event_handler = handler
    smtp.data_size_limit = data_size_limit
    smtp.enable_SMTPUTF8 = enable_SMTPUTF8
    smtp._decode_data = False
    smtp.command_size_limits.clear()
    smtp.hostname = hostname or socket.getfqdn()
    smtp.tls_context = tls_context
    smtp.require_starttls = tls_context and require_starttls
    smtp._timeout_duration = timeout
    smtp._timeout_handle = None
    smtp._tls_handshake_okay = True
    smtp._tls_protocol = None
    smtp._original_transport = None
    smtp.session = None
    smtp.envelope = None
    smtp.transport = None
    smtp._handler_coroutine = None
    smtp._auth_require_tls = True
    smtp._proxy_timeout = None
    smtp._authenticator = None
    smtp._auth_callback = login_always_fail
    smtp._auth_required = False
    smtp._auth_methods = {mech: _AuthMechAttr(getattr(smtp if builtin else handler, name), builtin)
                          for mech, name, builtin in layout.auth}
    smtp._handle_hooks = dict(layout.hooks)
    smtp._ehlo_hook_ver = layout.ehlo_hook_ver
    smtp._smtp_methods = {name: getattr(smtp, "smtp_" + name) for name in layout.commands}
    smtp._enforce_call_limit = False
