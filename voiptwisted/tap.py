"""``twistd voip``: command-line options and ``makeService`` (the plugin's whole logic).

Options are checked here, before any network activity, so a bad AOR, port range,
listen description or file is a usage error that names the problem instead of a
traceback later.

The plugin, not the service, owns the process: :func:`makeService` turns the service's
:meth:`~voiptwisted.service.VoIPService.when_finished` (the ``--dial`` call's outcome, or a
listener that cannot bind) into ``reactor.stop()`` and the process's exit status.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python import reflect, usage

import voiptwisted
from voiptwisted.service import ServiceConfig, VoIPService, check_listen_description

__all__ = ["APPS", "Options", "default_state_dir", "exit_when_finished", "makeService"]

log = Logger()

APPS = ("echo", "reject", "play:PATH", "record:DIR")


def default_state_dir() -> pathlib.Path:
    """Where the instance id and the embedded certificate live (XDG state directory)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return pathlib.Path(base) / "voiptwisted"


def _parse_port_range(value: str) -> tuple[int, int]:
    low, sep, high = value.partition("-")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        raise usage.UsageError(
            f"--rtp-ports must look like LOW-HIGH (e.g. 10000-20000), not {value!r}"
        ) from None
    if not sep or not (1024 <= lo < hi <= 65535) or hi - lo < 2:
        raise usage.UsageError(
            f"--rtp-ports {value!r}: need 1024 <= LOW < HIGH <= 65535 with room for RTP+RTCP"
        )
    return lo, hi


def _reliable_provisionals(value: str) -> str:
    """``--100rel``: one of :data:`~voiptwisted.service.RELIABLE_PROVISIONALS`."""
    from voiptwisted.service import RELIABLE_PROVISIONALS

    if value not in RELIABLE_PROVISIONALS:
        raise ValueError(f"--100rel must be one of {', '.join(RELIABLE_PROVISIONALS)}")
    return value


_reliable_provisionals.coerceDoc = "required or supported."  # type: ignore[attr-defined]


def _parse_codecs(value: str) -> tuple[str, ...]:
    """``--codecs opus,g722,pcma,pcmu``: registered codec names, no repeats, at least one."""
    from voiptwisted.codecs import lookup, usable

    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise usage.UsageError("--codecs needs at least one codec, e.g. opus,g722,pcma,pcmu")
    if len({name.upper() for name in names}) != len(names):
        raise usage.UsageError(f"--codecs {value!r} names a codec twice")
    try:
        lookup(names)
        usable(names, explicit=True)
    except ValueError as e:
        raise usage.UsageError(f"--codecs: {e}") from None
    return names


def _parse_host_port(
    option: str, value: str, default_port: int, *, ip_only: bool = False
) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[v6]:PORT`` for IPv6) of ``--option``; ``ip_only`` refuses names."""
    from voiptwisted.sip.uri import NetworkAddress

    try:
        address = NetworkAddress.parse(value, default_port)
    except ValueError as e:
        raise usage.UsageError(f"--{option} {value!r}: {e}") from None
    if ip_only and isinstance(address.host, str):
        raise usage.UsageError(
            f"--{option} {value!r}: give the server's IP address (a name would need DNS itself)"
        )
    return str(address.host), address.port


class Options(usage.Options):
    """Options of ``twistd voip``; see the README for examples of each."""

    synopsis = "[--aor sips:user@domain] [--app echo|reject|play:PATH|record:DIR] [options]"
    longdesc = (
        "Register a SIP address of record over TLS and answer (or --dial) calls with an "
        "application.  Without --aor, --listen and --dial, listen on TLS at 127.0.0.1:5061 "
        "with a self-signed certificate and answer every call with echo."
    )

    optParameters = [
        ["aor", None, None, "SIP address of record to register, e.g. sips:alice@carrier.example"],
        ["password-file", None, None, "File holding the SIP password (else $SIP_PASSWORD)."],
        ["ca-file", None, None, "PEM file of extra CA certificates to trust for TLS."],
        ["keepalive", None, "30", "RFC 5626 keepalive interval in seconds."],
        ["stun-server", None, None, "STUN server HOST[:PORT] to learn the public RTP address."],
        [
            "dns-server",
            None,
            None,
            "DNS server IP[:PORT] for the registrar's SRV/A/AAAA lookups (RFC 3263; "
            "default: the system's, /etc/resolv.conf).",
        ],
        ["rtp-ports", None, "10000-20000", "UDP port range LOW-HIGH for RTP."],
        [
            "srtp",
            None,
            None,
            "SRTP policy: required|optional|off (default: required for sips:, which "
            "refuses off/optional).",
        ],
        [
            "rtp-timeout",
            None,
            "60",
            "Hang up a call after this many seconds without RTP or RTCP (0: never).",
        ],
        [
            "rtp-hold-timeout",
            None,
            "0",
            "The same for a call on hold (inactive/sendonly/recvonly; 0: never).",
        ],
        [
            "session-expires",
            None,
            "1800",
            "Session interval in seconds calls ask for (RFC 4028 session timers, 90-86400): "
            "the refresher refreshes at half of it, else the call ends with BYE.",
        ],
        [
            "100rel",
            None,
            None,
            "When the 18x of calls we receive go reliably (RFC 3262 PRACK): required (only "
            "when the INVITE requires 100rel) or supported (whenever it supports it); "
            "default: the dialog class's reliable_when_supported (required for Dialog).",
            _reliable_provisionals,
        ],
        [
            "codecs",
            None,
            None,
            "Audio codecs to offer and accept, in preference order (default opus,g722,pcma,pcmu; "
            "opus only where libopus is installed).",
        ],
        [
            "max-calls",
            None,
            None,
            "Answer at most N concurrent calls over all flows; more get 486 Busy Here "
            "(default: what --rtp-ports can carry, more get 503).",
        ],
        [
            "max-call-duration",
            None,
            "0",
            "Hang up (BYE) a call this many seconds after its INVITE (0: no limit).",
        ],
        [
            "max-connections",
            None,
            "1000",
            "Inbound TLS/TCP connections per listener at once (kept below ulimit -n).",
        ],
        ["handshake-timeout", None, "10", "Seconds a TLS handshake may take (0: no limit)."],
        [
            "request-timeout",
            None,
            "30",
            "Close an inbound connection without a complete request after this many seconds.",
        ],
        [
            "idle-timeout",
            None,
            "120",
            "Close an inbound connection with no call and no transaction after this many "
            "seconds.",
        ],
        [
            "message-timeout",
            None,
            "10",
            "Close an inbound connection whose partial message is not complete after this "
            "many seconds.",
        ],
        [
            "drain-timeout",
            None,
            "0",
            "On SIGTERM, refuse new calls (503) and let active ones go on for up to this "
            "many seconds before hanging up (0: hang up at once).",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics on this server endpoint, e.g. "
            "tcp:9460:interface=127.0.0.1.",
        ],
        ["cdr", None, None, "Append one JSON call record per ended call to this file (0600)."],
        ["app", None, "echo", "Built-in call handler: echo, reject, play:PATH or record:DIR."],
        ["dialog", None, None, "Dotted name of an IDialog class (overrides --app)."],
        [
            "dial",
            None,
            None,
            "Call this URI, then stop when it ends: once registered with --aor, else "
            "straight to it (TLS verified against its host unless ;transport=tcp).",
        ],
        ["state-dir", None, None, "Directory for the instance id and embedded certificate."],
    ]
    optFlags = [
        ["no-verify-tls", None, "Do NOT verify the server certificate (insecure; warns)."],
        [
            "allow-legacy-digest",
            None,
            "Answer qop-less MD5 digest challenges (RFC 2069; easy to crack; refused by default).",
        ],
        ["cdr-full-uris", None, "Write whole From/To URIs in --cdr records (else masked)."],
        ["trace-sip", None, "Log every SIP message (credentials and SRTP keys redacted)."],
        [
            "no-redirects",
            None,
            "Fail a --dial call on a 3xx instead of trying its Contacts (RFC 3261 §8.1.3.4).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["auth-realm"] = []
        self["listen"] = []

    def opt_auth_realm(self, realm: str) -> None:
        """Also answer Digest challenges for this realm with the AOR's password (repeatable)."""
        realm = realm.strip()
        if not realm:
            raise usage.UsageError("--auth-realm needs a realm name")
        self["auth-realm"].append(realm)

    def opt_listen(self, description: str) -> None:
        """Endpoint for direct calls (tcp:5060, udp:5060, tls:5061 self-signed); repeatable."""
        # Checked here, bound at start; tls: without privateKey= uses the embedded certificate.
        try:
            check_listen_description(description)
        except ValueError as e:
            raise usage.UsageError(f"--listen {description!r}: {e}") from None
        self["listen"].append(description)

    def opt_version(self) -> None:
        """Display voiptwisted's version (and Twisted's) and exit."""
        from twisted import copyright

        print(f"voiptwisted {voiptwisted.__version__} (Twisted {copyright.version})")
        sys.exit(0)

    def postOptions(self) -> None:
        """Validate every option and build ``self.config`` (a ``ServiceConfig``)."""
        from voiptwisted.sdp.policy import srtp_policy
        from voiptwisted.sip.uri import SipURI

        aor = None
        password = None
        if self["aor"]:
            try:
                aor = SipURI.parse(self["aor"])
            except ValueError as e:
                raise usage.UsageError(f"--aor: {e}") from None
            if not aor.user:
                raise usage.UsageError("--aor needs a user part, e.g. sips:alice@carrier.example")
            password = aor.password
        if self["password-file"]:
            try:
                password = pathlib.Path(self["password-file"]).read_text().strip()
            except OSError as e:
                raise usage.UsageError(f"--password-file: {e.strerror}: {e.filename}") from None
        elif password is None:
            password = os.environ.get("SIP_PASSWORD")
        if self["ca-file"] and not os.path.isfile(self["ca-file"]):
            raise usage.UsageError(f"--ca-file {self['ca-file']!r} does not exist")
        try:
            keepalive = float(self["keepalive"])
        except ValueError:
            raise usage.UsageError("--keepalive takes a number of seconds") from None
        if not 5 <= keepalive <= 3600:
            raise usage.UsageError("--keepalive must be between 5 and 3600 seconds")
        srtp = self["srtp"]
        if srtp is not None and srtp not in ("required", "optional", "off"):
            raise usage.UsageError("--srtp must be required, optional or off")
        timeouts: dict[str, Any] = {}
        for option in ("rtp-timeout", "rtp-hold-timeout", "max-call-duration",
                       "handshake-timeout", "request-timeout", "idle-timeout",
                       "message-timeout", "drain-timeout"):  # fmt: skip
            try:
                seconds = float(self[option])
            except ValueError:
                raise usage.UsageError(f"--{option} takes a number of seconds") from None
            if not 0 <= seconds <= 86400:
                raise usage.UsageError(f"--{option} must be between 0 and 86400 seconds")
            timeouts[option.replace("-", "_")] = seconds
        try:
            timeouts["max_connections"] = int(self["max-connections"])
        except ValueError:
            raise usage.UsageError("--max-connections takes a whole number") from None
        if timeouts["max_connections"] < 1:
            raise usage.UsageError("--max-connections must be at least 1")
        try:
            timeouts["session_expires"] = int(self["session-expires"])
        except ValueError:
            raise usage.UsageError("--session-expires takes a whole number of seconds") from None
        if not 90 <= timeouts["session_expires"] <= 86400:
            raise usage.UsageError("--session-expires must be between 90 and 86400 seconds")
        codecs = _parse_codecs(self["codecs"]) if self["codecs"] is not None else None
        max_calls = None
        if self["max-calls"] is not None:
            try:
                max_calls = int(self["max-calls"])
            except ValueError:
                raise usage.UsageError("--max-calls takes a whole number") from None
            if max_calls < 0:
                raise usage.UsageError("--max-calls must not be negative")
        dial = None
        if self["dial"]:
            # Without --aor the call goes straight to the target (VoIPService.place_call).
            try:
                dial = SipURI.parse(self["dial"])
            except ValueError as e:
                raise usage.UsageError(f"--dial: {e}") from None
        if self["metrics"]:
            try:
                check_listen_description(self["metrics"])
            except ValueError as e:
                raise usage.UsageError(f"--metrics {self['metrics']!r}: {e}") from None
        if self["cdr"]:
            directory = os.path.dirname(os.path.abspath(self["cdr"]))
            if not os.access(directory, os.W_OK):
                raise usage.UsageError(f"--cdr {self['cdr']!r}: cannot write in {directory}")
        elif self["cdr-full-uris"]:
            raise usage.UsageError("--cdr-full-uris needs --cdr")
        try:
            srtp_policy(srtp, aor, dial)
        except ValueError as e:
            raise usage.UsageError(f"--srtp: {e}") from None
        self.config = ServiceConfig(
            aor=aor,
            password=password,
            auth_realms=tuple(self["auth-realm"]),
            allow_legacy_digest=bool(self["allow-legacy-digest"]),
            ca_file=self["ca-file"],
            verify_tls=not self["no-verify-tls"],
            keepalive=keepalive,
            stun_server=(
                _parse_host_port("stun-server", self["stun-server"], 3478)
                if self["stun-server"]
                else None
            ),
            dns_server=(
                _parse_host_port("dns-server", self["dns-server"], 53, ip_only=True)
                if self["dns-server"]
                else None
            ),
            rtp_ports=_parse_port_range(self["rtp-ports"]),
            srtp=srtp,
            **timeouts,
            **({"codecs": codecs} if codecs is not None else {}),
            max_calls=max_calls,
            dialog_class=self._dialog_class(),
            reliable_provisionals=self["100rel"],
            dial=dial,
            listen=tuple(self["listen"]) or None,
            trace_sip=bool(self["trace-sip"]),
            follow_redirects=not self["no-redirects"],
            metrics=self["metrics"],
            cdr=self["cdr"],
            cdr_full_uris=bool(self["cdr-full-uris"]),
            state_dir=pathlib.Path(self["state-dir"])
            if self["state-dir"]
            else default_state_dir(),
        )

    def _dialog_class(self) -> type:
        from voiptwisted.apps import dialog_for_app
        from voiptwisted.interfaces import IDialog

        if self["dialog"]:
            try:
                cls = reflect.namedAny(self["dialog"])
            except (reflect.ObjectNotFound, reflect.InvalidName, ValueError) as e:
                raise usage.UsageError(f"--dialog {self['dialog']!r}: {e}") from None
            if not (isinstance(cls, type) and IDialog.implementedBy(cls)):
                raise usage.UsageError(
                    f"--dialog {self['dialog']!r} is not a class implementing IDialog "
                    "(subclass voiptwisted.sip.Dialog)"
                )
            return cls
        try:
            return dialog_for_app(self["app"])
        except ValueError as e:
            raise usage.UsageError(f"--app: {e}") from None


def exit_when_finished(
    service: VoIPService,
    reactor: Any,
    *,
    at_exit: Callable[[Callable[[int], None], int], Any] = atexit.register,
) -> None:
    """The plugin's hook: when *service* finishes, stop *reactor* and exit with its status.

    ``twistd`` always exits 0 once the reactor stops (and swallows ``SystemExit`` from
    shutdown triggers), so a non-zero status is applied at interpreter exit, after twistd
    has shut down and removed its pidfile (``at_exit`` is ``atexit.register``).  A start
    failure happens before the reactor runs: the stop waits for it to run.
    """

    def finished(status: int) -> None:
        log.info("stopping, exit status {status}", status=status)
        if status:
            at_exit(_exit_with, status)

        def stop() -> None:
            with contextlib.suppress(ReactorNotRunning):  # already stopping
                reactor.stop()

        reactor.callWhenRunning(stop)

    service.when_finished().addCallback(finished)


def _exit_with(status: int) -> None:
    """atexit: end the process with *status*: flush logs and streams, then leave."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def makeService(options: Options | dict[str, Any]) -> VoIPService:
    """Build the ``VoIPService`` twistd runs, wired to stop the process when it finishes.

    To embed the service in your own application, build ``VoIPService`` yourself: it
    never stops the reactor (see :func:`exit_when_finished` for what this adds).
    """
    from twisted.internet import reactor

    service = VoIPService(options.config, reactor)  # type: ignore[union-attr]
    exit_when_finished(service, reactor)
    return service
