"""Running mailguard in production: start-up checks (``preflight``), one-line errors
(``errors``), the service user's folders and key (``setup``), readiness for systemd
(``sdnotify``), Prometheus metrics and ``mailguard stats`` (``metrics``), text from a message made safe to
show a person (``shown``), the Unix sockets (``unixsocket``)."""
