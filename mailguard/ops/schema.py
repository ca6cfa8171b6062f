"""The [metrics] keys: the Prometheus endpoint. Read by ``mailguard.config`` without
importing prometheus_client."""
from __future__ import annotations

import ipaddress
from typing import Any, Mapping

from mailguard.options import Option

CONFIG_SCHEMA: Mapping[str, Option] = {
    "listen": Option(
        "", "str",
        "Where `mailguard serve` and `mailguard milter` answer Prometheus scrapes (GET /metrics), as "
        "\"127.0.0.1:PORT\", e.g. \"127.0.0.1:9464\" for the relay and \"127.0.0.1:9465\" for the milter. "
        "Loopback addresses only: the counters are not secret but the endpoint has no authentication "
        "(scrape it through an SSH tunnel or a local Prometheus agent). Empty: no endpoint.",
    ),
}


def check_section(values: Mapping[str, Any], where: str) -> list[str]:
    text = values["listen"].strip()
    if not text:
        return []
    from mailguard.relay.schema import check_host_port

    error = check_host_port(text, f"{where} listen", allow_zero=True)
    if error:
        return [error]
    host = text.rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return [f"{where} listen: {text!r} is not a loopback address; use 127.0.0.1:PORT or [::1]:PORT "
                "(the endpoint has no authentication)"]
    return []
