"""The [relay] section read into one immutable object, checked once.

Kept apart from the server so that loading a configuration (``mailguard check``) does not
import the SMTP libraries, and so that a reload (SIGHUP) can build and check new settings
before anything running is touched.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from mailguard.config import Config, ConfigError
from mailguard.quarantine.smtp import SmtpTargetError, parse_host_port
from mailguard.relay.forward import Downstream

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RelaySettings:
    listen_host: str
    listen_port: int
    hostname: str
    downstream: Downstream
    relay_domains: tuple[str, ...]
    trusted_networks: tuple[Network, ...]
    verify_recipients: bool
    max_message_bytes: int
    max_connections: int
    max_connections_per_client: int
    junk_command_limit: int
    command_timeout: float
    data_timeout: float
    scan_timeout: float
    scan_queue_timeout: float
    shutdown_timeout: float
    tls_cert: str
    tls_key: str
    require_tls: bool
    pool: str
    workers: int
    queue_limit: int
    large_message_bytes: int
    large_workers: int
    large_queue_limit: int
    on_error: str
    bare_line_endings: str

    @classmethod
    def from_config(cls, config: Config) -> "RelaySettings":
        s = config.section("relay")
        where = f"{config.source or 'configuration'}: [relay]"
        listen_host, listen_port = _host_port(s["listen"], f"{where} listen", any_port=True)
        down_host, down_port = _host_port(s["downstream"], f"{where} downstream")
        hostname = s["hostname"] or _machine_name()
        if bool(s["tls_cert"]) != bool(s["tls_key"]):
            raise ConfigError(f"{where}: tls_cert and tls_key must be set together")
        if s["require_tls"] and not s["tls_cert"]:
            raise ConfigError(f"{where} require_tls: needs tls_cert and tls_key")
        workers = s["workers"] or os.cpu_count() or 1
        return cls(
            listen_host=listen_host,
            listen_port=listen_port,
            hostname=hostname,
            downstream=Downstream(
                host=down_host, port=down_port, tls=s["downstream_tls"], tls_verify=s["downstream_tls_verify"],
                ca_file=str(config.resolve_path(s["downstream_ca_file"])) if s["downstream_ca_file"] else "",
                timeout=s["downstream_timeout"], data_timeout=s["downstream_data_timeout"],
                local_hostname=hostname,
            ),
            relay_domains=tuple(d.strip().lower().lstrip("@").rstrip(".") for d in s["relay_domains"] if d.strip()),
            trusted_networks=tuple(_network(n, f"{where} trusted_networks") for n in s["trusted_networks"]),
            verify_recipients=s["verify_recipients"],
            max_message_bytes=s["max_message_bytes"],
            max_connections=s["max_connections"],
            max_connections_per_client=s["max_connections_per_client"],
            junk_command_limit=s["junk_command_limit"],
            command_timeout=s["command_timeout"],
            data_timeout=s["data_timeout"],
            scan_timeout=s["scan_timeout"],
            scan_queue_timeout=s["scan_queue_timeout"],
            shutdown_timeout=s["shutdown_timeout"],
            tls_cert=str(config.resolve_path(s["tls_cert"])) if s["tls_cert"] else "",
            tls_key=str(config.resolve_path(s["tls_key"])) if s["tls_key"] else "",
            require_tls=s["require_tls"],
            pool=s["pool"],
            workers=workers,
            queue_limit=s["queue_limit"] or workers * 16,
            large_message_bytes=s["large_message_bytes"],
            large_workers=s["large_workers"],
            large_queue_limit=s["large_queue_limit"] or s["large_workers"] * 8,
            on_error=s["on_error"],
            bare_line_endings=s["bare_line_endings"],
        )

    def accepts_domain(self, address: str) -> bool:
        """A recipient in one of relay_domains (or a subdomain of one)."""
        domain = address.rpartition("@")[2].strip().lower().rstrip(".")
        if not domain:
            return False
        return any(domain == d or domain.endswith("." + d) for d in self.relay_domains)

    def is_trusted(self, client_ip: str) -> bool:
        return in_networks(client_ip, self.trusted_networks)

    def restart_needed(self, other: "RelaySettings") -> list[str]:
        """Keys whose change only takes effect after a restart (a reload cannot rebind)."""
        keys = [("listen", (self.listen_host, self.listen_port), (other.listen_host, other.listen_port))]
        return [name for name, old, new in keys if old != new]


def in_networks(client_ip: str, networks: tuple[Network, ...]) -> bool:
    """Whether a client address (IPv4, IPv6, IPv4-mapped IPv6) is in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(client_ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def _host_port(text: str, where: str, any_port: bool = False) -> tuple[str, int]:
    """'host:port'; with ``any_port``, port 0 asks the system for a free port (tests)."""
    try:
        if any_port and text.strip().endswith(":0"):
            return parse_host_port(text.strip()[:-2])[0], 0
        return parse_host_port(text)
    except SmtpTargetError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _network(text: str, where: str) -> Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _machine_name() -> str:
    """The host name for the greeting, looked up once (getfqdn may wait on DNS)."""
    name = socket.gethostname() or "localhost"
    return name if "." in name else f"{name}.localdomain"

