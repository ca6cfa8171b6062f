"""Running mailguard in production: start-up checks (``preflight``), one-line errors
(``errors``), the service user's folders and key (``setup``), readiness for systemd
(``sdnotify``), Prometheus metrics and ``mailguard stats`` (``metrics``)."""
