"""``VoIPService``: registration, keepalive, dialog routing and media wired into one service.

It is what ``twistd voip`` runs and what an existing Twisted application adds to its
own service tree (``VoIPService(ServiceConfig(...), reactor).setServiceParent(application)``).

Without an AOR, ``listen`` and ``dial`` it is the *embedded default*: TLS on
127.0.0.1:5061 with a self-signed certificate created once in ``state_dir``,
answering every call with echo, so a newcomer can try it without a carrier.

It never stops the reactor or ends the process, whatever happens: a listener that
cannot bind fails the service's start (:meth:`VoIPService.when_listening` fails with
:class:`ListenFailed`, one error line is logged) and the ``dial`` call's outcome is an
exit status (:meth:`VoIPService.when_finished`).  What to do with them is the host's
decision; the ``twistd voip`` plugin stops the reactor and exits with that status.
Nothing is written to ``state_dir`` before the service starts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import pathlib
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from voiptwisted.codecs import DEFAULT_CODECS, lookup, usable
from voiptwisted.sip.limits import (
    ConnectionLimits,
    RateLimitedWarning,
    clamp_max_connections,
    default_max_calls,
    fd_limit,
)
from voiptwisted.sip.protocol import SIPServerFactory
from voiptwisted.sip.uri import SipURI

__all__ = [
    "DIRECT_FLOW_IDLE",
    "EMBEDDED_PORT",
    "RELIABLE_PROVISIONALS",
    "RETRY_AFTER",
    "STOP_TIMEOUT",
    "ListenFailed",
    "ServiceConfig",
    "VoIPService",
    "baresip_command",
    "check_listen_description",
    "embedded_listen_description",
    "listen_description",
]

log = Logger()

#: How long stopService waits for BYEs, the un-REGISTER and closing flows (issue 6: within 5 s).
STOP_TIMEOUT = 4.0
#: The Retry-After (seconds) of our 503s to OPTIONS and INVITE while draining or full.
RETRY_AFTER = 30
#: How often (seconds) the active calls' jitter is sampled for their call records.
SAMPLE_INTERVAL = 5.0
#: The embedded default's TLS port on 127.0.0.1 (the SIP-over-TLS port, RFC 3261 §19.1.2).
EMBEDDED_PORT = 5061
#: How often (seconds) a flow opened for direct calls (no registrar) is checked; one that
#: carries no call nor transaction then is closed.
DIRECT_FLOW_IDLE = 32.0
#: The ``--100rel`` policies (RFC 3262): our 18x go reliably when the INVITE "required"
#: ``100rel``, or whenever it "supported" it.
RELIABLE_PROVISIONALS = ("required", "supported")


@dataclasses.dataclass
class ServiceConfig:
    """Everything ``twistd voip`` can be told; the defaults are the embedded echo service.

    ``listen`` is one server endpoint description or several (each is bound; see
    :func:`listen_description`).  ``dns_server`` (an IP address and port) is where the
    registrar's DNS SRV and A/AAAA records are looked up (RFC 3263); None asks the
    system's DNS servers (``/etc/resolv.conf``).

    Digest credentials are sent only to the registrar's realm (bound by its first
    challenge), to ``auth_realms`` (with ``password``) and to the realms of
    ``realm_credentials`` (``{realm: (username, password)}``); a challenge for any
    other realm fails the request.  ``allow_legacy_digest`` answers qop-less MD5
    (RFC 2069), refused by default.

    ``srtp`` left out is "required" when ``aor`` or ``dial`` is a ``sips:`` URI, else
    "optional"; an explicit "off"/"optional" with a ``sips:`` URI raises ValueError
    (issue 14 finding 11: SIPS calls are SRTP only, in every API).  ``rtp_timeout``
    hangs up a call after that many seconds without RTP or RTCP, ``rtp_hold_timeout``
    a call on hold (0: never); see ``MediaConfig``.  ``codecs`` names the audio codecs
    offered and accepted, in preference order (``MediaConfig.codecs``).

    Bounds (issue 14 findings 5 and 6; all of them are in the README's Security section):
    ``max_calls`` left out is derived from ``rtp_ports`` and the descriptor limit
    (:func:`~voiptwisted.sip.limits.default_max_calls`) and calls beyond it get 503 with
    Retry-After; an explicit ``max_calls`` answers 486 beyond it.  Both count calls over
    every flow (listeners and the registrar's).  ``max_call_duration`` (seconds from the
    INVITE, 0: none) hangs up longer calls with BYE.  Each listener accepts at most
    ``max_connections`` connections (lowered below the process's ``ulimit -n`` with a
    log line) and closes one whose TLS handshake takes over ``handshake_timeout``, that
    sends no complete request within ``request_timeout``, that carries no call and no
    transaction for ``idle_timeout`` or leaves a message partial for ``message_timeout``
    (seconds; 0 turns one off; see :class:`~voiptwisted.sip.limits.ConnectionLimits`).
    """

    aor: SipURI | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    auth_realms: tuple[str, ...] = ()
    realm_credentials: dict[str, tuple[str, str]] = dataclasses.field(
        default_factory=dict, repr=False
    )
    allow_legacy_digest: bool = False
    ca_file: str | None = None
    verify_tls: bool = True
    keepalive: float = 30.0
    stun_server: tuple[str, int] | None = None
    dns_server: tuple[str, int] | None = None
    rtp_ports: tuple[int, int] = (10000, 20000)
    srtp: str | None = None
    rtp_timeout: float = 60.0
    rtp_hold_timeout: float = 0.0
    #: The session interval calls ask for (RFC 4028, ``--session-expires``); see MediaConfig.
    session_expires: int = 1800
    codecs: tuple[str, ...] = DEFAULT_CODECS
    #: When our 18x go reliably (RFC 3262, ``--100rel``): "required" only when the INVITE
    #: requires ``100rel``, "supported" whenever it supports it; None: the dialog class's
    #: ``reliable_when_supported``.  Applies to the calls this service receives.
    reliable_provisionals: str | None = None
    max_calls: int | None = None
    max_call_duration: float = 0.0
    max_connections: int = 1000
    handshake_timeout: float = 10.0
    request_timeout: float = 30.0
    idle_timeout: float = 120.0
    message_timeout: float = 10.0
    #: Seconds stopService lets active calls go on before it hangs them up (0: at once).
    drain_timeout: float = 0.0
    #: A server endpoint description serving Prometheus metrics (``--metrics``), or None.
    metrics: str | None = None
    #: A file to append one JSON line per ended call to (``--cdr``), or None; parties in
    #: it are masked as in the logs unless ``cdr_full_uris``.
    cdr: str | None = None
    cdr_full_uris: bool = False
    dialog_class: type | None = None
    dial: SipURI | None = None
    #: Follow 3xx redirects of calls we place (RFC 3261 §8.1.3.4); ``--no-redirects``.
    follow_redirects: bool = True
    listen: str | Sequence[str] | None = None
    trace_sip: bool = False
    state_dir: pathlib.Path = dataclasses.field(
        default_factory=lambda: pathlib.Path.home() / ".local" / "state" / "voiptwisted"
    )

    def __post_init__(self) -> None:
        from voiptwisted.sdp.policy import srtp_policy

        #: True when ``srtp`` was given, False when it follows the URIs.
        self.srtp_explicit = self.srtp is not None
        self.srtp = srtp_policy(self.srtp, self.aor, self.dial)
        for name in ("rtp_timeout", "rtp_hold_timeout", "max_call_duration",
                     "drain_timeout"):  # fmt: skip
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 or more seconds")
        if self.max_calls is not None and self.max_calls < 0:
            raise ValueError("max_calls must not be negative")
        if not 90 <= self.session_expires <= 86400:
            raise ValueError("session_expires must be 90 to 86400 seconds (RFC 4028)")
        if self.reliable_provisionals not in (None, *RELIABLE_PROVISIONALS):
            raise ValueError(
                f"reliable_provisionals must be one of {', '.join(RELIABLE_PROVISIONALS)}"
            )
        # ValueError here for a bad bound, before any socket is opened.
        self.connection_limits()
        # A default codec whose system library is missing is left out; one named is an error.
        self.codecs = usable(self.codecs, explicit=self.codecs is not DEFAULT_CODECS)
        if not lookup(self.codecs):
            raise ValueError("codecs must name at least one codec")

    def connection_limits(self, fds: int | None = None) -> ConnectionLimits:
        """The :class:`ConnectionLimits` of each listener; ``max_connections`` is lowered
        to what *fds* (the process's descriptor limit) leaves room for."""
        return ConnectionLimits(
            max_connections=clamp_max_connections(self.max_connections, fds),
            handshake_timeout=self.handshake_timeout,
            request_timeout=self.request_timeout,
            idle_timeout=self.idle_timeout,
            message_timeout=self.message_timeout,
        )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", r"\:")


def embedded_listen_description(pem: pathlib.Path, port: int = EMBEDDED_PORT) -> str:
    """The strports description of the embedded TLS listener on 127.0.0.1."""
    path = _escape(str(pem))
    return f"ssl:{port}:interface=127.0.0.1:privateKey={path}:certKey={path}"


def listen_description(description: str, pem: Any) -> str:
    """A server endpoint description for ``--listen``.

    ``tls:`` is accepted as a synonym of Twisted's ``ssl:`` server endpoint; a TLS
    description without ``privateKey=`` gets the embedded self-signed certificate
    (``pem()`` is called to create it only then), so ``--listen tls:5071`` just works.
    """
    kind, sep, rest = description.partition(":")
    if kind.lower() not in ("tls", "ssl"):
        return description
    description = "ssl" + sep + rest
    if "privatekey=" not in rest.lower():
        path = _escape(str(pem()))
        description += f":privateKey={path}:certKey={path}"
    return description


def baresip_command(uri: str) -> str:
    """A copy-paste baresip command that calls *uri* without any account setup.

    ``/uanew`` creates a user agent that does not register (``regint=0``) and
    ``/dial`` calls us; baresip 1.0 does not verify the self-signed certificate.
    """
    return f"baresip -e \"/uanew <sip:me@127.0.0.1;transport=tls>;regint=0\" -e \"/dial {uri}\""


#: Server endpoint arguments that only TLS listeners take (checked with the key, at start).
_TLS_ONLY_ARGUMENTS = ("sslmethod", "extracertchain", "dhparameters")


def _split_description(description: str) -> list[str]:
    """*description*'s ``:``-separated fields; ``\\:`` and ``\\\\`` stay escaped in them."""
    fields, current, escaped = [], [], False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def udp_description(description: str) -> tuple[int, str] | None:
    """``(port, interface)`` of a ``udp:PORT[:interface=ADDRESS]`` listen description, None
    for any other kind.  Raises ValueError naming what is wrong with a ``udp:`` one.

    Twisted has no UDP server endpoint, so ``--listen udp:`` is parsed here and bound
    with ``reactor.listenUDP`` (SIP over UDP, RFC 3261 §18).
    """
    kind, _, rest = description.partition(":")
    if kind.lower() != "udp":
        return None
    fields = _split_description(rest)
    port_text = fields[0]
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(f"invalid UDP port {port_text[:20]!r}")
    interface = ""
    for field in fields[1:]:
        name, sep, value = field.partition("=")
        if name.lower() != "interface" or not sep:
            raise ValueError(f"unknown UDP listen argument {field[:40]!r} (only interface=)")
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"interface must be an IP address, not {value[:60]!r}") from None
        interface = value
    return int(port_text), interface


def check_listen_description(description: str) -> None:
    """Raise ``ValueError`` naming the problem if *description* cannot be listened on.

    Parses it as :func:`listen_description` would turn it into a server endpoint (no
    socket is opened, nothing is written): an unknown endpoint type, a port that is not
    a number, an unknown argument or an unreadable ``privateKey=`` file is refused, so
    ``twistd voip --listen`` reports it as a usage error before anything starts.  A TLS
    description without ``privateKey=`` (the embedded certificate, created at start) is
    checked as the TCP listener it runs on.
    """
    from twisted.internet import endpoints

    if udp_description(description) is not None:
        return
    kind, _, rest = description.partition(":")
    if kind.lower() in ("tls", "ssl") and "privatekey=" not in rest.lower():
        fields = [
            field for field in _split_description(rest)
            if field.partition("=")[0].lower() not in _TLS_ONLY_ARGUMENTS
        ]  # fmt: skip
        description = ":".join(["tcp", *fields])
    else:
        description = listen_description(description, lambda: None)
    try:
        # Parsing only: the endpoint built here is never listened on, so needs no reactor.
        endpoints.serverFromString(None, description)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(str(e) or type(e).__name__) from None
    except OSError as e:
        raise ValueError(f"{e.strerror}: {e.filename}") from None
    except Exception as e:  # pyOpenSSL's errors for a key or certificate it cannot load
        raise ValueError(f"cannot load the key or certificate: {e}") from None


class ListenFailed(Exception):
    """A ``VoIPService`` listener could not listen; ``str()`` is one line naming where and why.

    ``address`` is the listen description without key file names; ``reason`` the
    error (e.g. "Address already in use").
    """

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(address, reason)
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot listen on {self.address}: {self.reason}"


class _Listener(Service):
    """Listens on a server endpoint: in ``privilegedStartService``, or ``startService``.

    The TLS description's key (the embedded certificate when none is given) is
    resolved only then, so constructing the service writes nothing.  The outcome is
    kept for :meth:`when_listening`: the listening port, or a :class:`ListenFailed`.
    """

    def __init__(
        self, description: str, pem: Callable[[], pathlib.Path], factory: Any, reactor: Any
    ) -> None:
        self.description = description
        self.pem = pem
        self.factory = factory
        self.reactor = reactor
        self.port: Any = None
        self._outcome: Any = None
        self._retry = False  # a failure is kept for when_listening until the next start
        self._waiters: list[defer.Deferred[Any]] = []

    @property
    def address(self) -> str:
        """The description as logged: without key file names."""
        return self.description.split(":privateKey=")[0]

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self._outcome is None or self._retry:
            self._listen()

    def startService(self) -> None:
        super().startService()
        if self._outcome is None or self._retry:
            self._listen()

    def _listen(self) -> None:
        from twisted.internet import endpoints

        self._outcome = _PENDING
        self._retry = False
        try:
            udp = udp_description(self.description)
        except ValueError as e:
            self._done(Failure(ListenFailed(self.address, f"bad listen description: {e}")))
            return
        if udp is not None:
            self._listen_udp(*udp)
            return
        try:
            description = listen_description(self.description, self.pem)
            endpoint = endpoints.serverFromString(self.reactor, description)
        except OSError as e:
            self._done(Failure(ListenFailed(self.address, f"{e.strerror}: {e.filename}")))
            return
        except Exception as e:  # a bad description or key: ValueError, TypeError, SSL errors
            self._done(Failure(ListenFailed(self.address, f"bad listen description: {e}")))
            return
        d = endpoint.listen(self.factory)
        d.addCallbacks(
            self._done, lambda f: self._done(Failure(ListenFailed(self.address, _why(f))))
        )

    def _listen_udp(self, port: int, interface: str) -> None:
        """Bind SIP over UDP: one datagram protocol (one core) for the socket."""
        from twisted.internet.error import CannotListenError

        from voiptwisted.sip.datagram import READ_SIZE

        protocol = self.factory.build_datagram_protocol()
        try:
            listening = self.reactor.listenUDP(
                port, protocol, interface=interface, maxPacketSize=READ_SIZE
            )
        except CannotListenError as e:
            self._done(Failure(ListenFailed(self.address, _why(Failure(e)))))
            return
        self._done(listening)

    def _done(self, result: Any) -> None:
        if self._outcome is not _PENDING:  # stopped before the endpoint answered
            if not isinstance(result, Failure):
                result.stopListening()
            return
        if not isinstance(result, Failure):
            self.port = result
        self._outcome = result
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def when_listening(self) -> defer.Deferred[Any]:
        """Fires with the listening port, or fails with :class:`ListenFailed`."""
        if self._outcome is not None and self._outcome is not _PENDING:
            if isinstance(self._outcome, Failure):
                return defer.fail(self._outcome)
            return defer.succeed(self._outcome)
        waiter: defer.Deferred[Any] = defer.Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if isinstance(self._outcome, Failure):
            self._retry = True
        else:
            self._outcome = None
        if port is not None:
            return defer.maybeDeferred(port.stopListening)
        return None


#: A listener's outcome while ``endpoint.listen`` has not fired yet.
_PENDING = object()


def _why(failure: Failure) -> str:
    """Why listening failed, in a few words ("Address already in use", not Twisted's
    sentence that repeats the address)."""
    from twisted.internet.error import CannotListenError

    if failure.check(CannotListenError):
        error = failure.value.socketError
        return str(getattr(error, "strerror", None) or error)
    return failure.getErrorMessage()


class VoIPService(MultiService):
    """A SIP user agent as a Twisted service.

    With ``config.aor`` it keeps a registered flow to the AOR's registrar (reconnecting
    with backoff, RFC 5626 keepalive); with ``config.listen`` (or none of ``aor``,
    ``listen`` and ``dial``: the embedded default on TLS 127.0.0.1:5061) it also accepts
    calls sent straight to it.  A direct ``dial`` alone listens nowhere: its call's
    in-dialog requests come back on the flow it opened.  Inbound
    calls go to ``config.dialog_class``, at most ``config.max_calls`` at a time over all
    flows (486 Busy Here beyond).  ``config.dial`` places one call once registered (straight
    to it without an AOR, see :meth:`place_call`);
    :meth:`when_finished` fires with 0 when it was answered and has ended, 1 otherwise.

    Listeners bind in ``privilegedStartService`` (or ``startService`` when the host does
    not call it); the registration starts only once every listener listens.  When one
    cannot, the start fails: one error line names the address and the reason,
    :meth:`when_listening` fails with :class:`ListenFailed`, :meth:`when_finished` fires
    with 1, and nothing else of this service runs.  The reactor and the rest of the host's
    services are never touched.

    ``reactor`` is the host's (``IReactorTime``, ``IReactorTCP``/``IReactorSSL``,
    ``IReactorUDP``): given here once, it reaches every flow, registration, keepalive
    and call's media; nothing below falls back to the global reactor.
    """

    def __init__(self, config: ServiceConfig, reactor: Any) -> None:
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.exit_status: int | None = None
        self.protocols: weakref.WeakSet[Any] = weakref.WeakSet()
        self.client: Any = None
        self.listeners: list[_Listener] = []
        self.listener: _Listener | None = None
        self.listen_description: str | None = None
        self.embedded_pem: pathlib.Path | None = None
        self.dialed: Any = None
        self.start_failure: ListenFailed | None = None
        self._unsaved_instance_id: str | None = None
        self._finished: list[defer.Deferred[int]] = []
        #: Direct flows (no registrar) by destination, and those still connecting.
        self._direct_flows: dict[tuple[Any, ...], Any] = {}
        self._connecting: dict[tuple[Any, ...], _SharedAttempt] = {}
        self._disconnect_waiters: list[defer.Deferred[None]] = []
        #: True once :meth:`drain` (or stopService) started: new calls get 503.
        self.draining = False
        self._drained: list[defer.Deferred[None]] | None = None
        self._drain_timer: Any = None
        #: Sees every SIP message and call of our flows (metrics, call records), or None.
        self.observer: Any = None
        self.metrics_listener: _Listener | None = None
        self.metrics_registry: Any = None
        self.cdr_writer: Any = None
        self._sampler: Any = None
        if config.metrics is not None or config.cdr is not None:
            self._add_observer()
        from voiptwisted.media.call import MediaConfig

        self.media_config = MediaConfig(
            port_range=config.rtp_ports,
            srtp=config.srtp if config.srtp_explicit else None,
            stun_server=config.stun_server,
            reactor=reactor,
            rtp_timeout=config.rtp_timeout,
            rtp_hold_timeout=config.rtp_hold_timeout,
            session_expires=config.session_expires,
            codecs=tuple(config.codecs),
        )
        # Left out, the policy follows the AOR ("required" for sips:) for every call.
        self.media_config.srtp = config.srtp
        if self.dialog_class is None:
            from voiptwisted.apps import EchoDialog

            self.dialog_class = EchoDialog
        fds = fd_limit()
        self.connection_limits = config.connection_limits(fds)
        #: Calls at once over every flow: ``config.max_calls``, else what the RTP ports
        #: and descriptors can carry (finding 6).
        listen = [config.listen] if isinstance(config.listen, str) else list(config.listen or ())
        if config.max_calls is not None:
            self.max_calls: int = config.max_calls
        else:
            connections = self.connection_limits.max_connections * max(1, len(listen))
            self.max_calls = default_max_calls(config.rtp_ports, fds, connections)
        self.capacity_warning = RateLimitedWarning(
            reactor, 10.0, "503 to new calls: {limit} calls in progress (the capacity of "
            "--rtp-ports; set --max-calls to choose another limit)",
        )
        self.inbound_dialog_class = self._limited(self.dialog_class)
        if config.aor is not None:
            self._add_client(config.aor)
        for description in listen:
            self._add_listener(description, config.aor)
        if not listen and config.aor is None and config.dial is None:
            embedded_aor = SipURI.parse("sip:echo@127.0.0.1")
            self._add_listener(f"ssl:{EMBEDDED_PORT}:interface=127.0.0.1", embedded_aor)

    @property
    def dialog_class(self) -> Any:
        """The IDialog class inbound calls (and ``dial``) use."""
        return self.config.dialog_class

    @dialog_class.setter
    def dialog_class(self, value: Any) -> None:
        self.config.dialog_class = value

    def _pem(self) -> pathlib.Path:
        """The embedded certificate, created in ``state_dir`` the first time a TLS listener
        without its own key starts."""
        from voiptwisted.selfsigned import ensure_self_signed

        if self.embedded_pem is None:
            self.embedded_pem = ensure_self_signed(self.config.state_dir)
        return self.embedded_pem

    def _limited(self, base: type) -> type:
        """*base* with a service-wide ``max_calls`` check before its ``call_received``.

        Each flow's protocol counts only its own calls; direct callers each have their
        own flow, so the limit over all flows is enforced here: 486 (RFC 3261 §21.4.24)
        beyond a configured ``max_calls``, 503 with Retry-After (§21.5.4) beyond the
        capacity derived from the RTP ports.  ``max_call_duration`` is armed here too.
        """
        service = weakref.ref(self)

        def call_received(dialog: Any) -> None:
            owner = service()
            if owner is None:
                base.call_received(dialog)
                return
            limit = owner.max_calls
            if owner.active_call_count() > limit:
                if owner.config.max_calls is not None:
                    log.info("486 to a call: max_calls={n} reached", n=limit)
                    dialog.reject(486)
                else:
                    owner.capacity_warning(limit=limit)
                    dialog.reject(503, retry_after=30)
                return
            owner.bound_duration(dialog)
            base.call_received(dialog)

        namespace: dict[str, Any] = {"call_received": call_received,
                                     "__module__": base.__module__, "__doc__": base.__doc__}
        policy = self.config.reliable_provisionals
        if policy is not None:
            namespace["reliable_when_supported"] = policy == "supported"
        return type(base.__name__, (base,), namespace)

    def _add_observer(self) -> None:
        """The call observer, the ``--metrics`` listener and the ``--cdr`` writer."""
        from voiptwisted.metrics import CallObserver

        self.observer = CallObserver(self.reactor)
        if self.config.cdr is not None:
            from voiptwisted.cdr import CallRecordWriter

            self.cdr_writer = CallRecordWriter(
                self.config.cdr, full_uris=self.config.cdr_full_uris
            )
            self.observer.listeners.append(self.cdr_writer)
        if self.config.metrics is not None:
            from twisted.web.server import Site

            from voiptwisted.media.pacer import default_pacer
            from voiptwisted.metrics import metrics_resource, service_registry

            #: This service's own Prometheus registry (``--metrics`` serves it).
            self.metrics_registry = service_registry(
                self, self.observer, default_pacer(self.reactor)
            )
            site = Site(metrics_resource(self.metrics_registry))
            site.noisy = False
            site.log = lambda request: None  # no access-log line per scrape
            self.metrics_listener = _Listener(
                self.config.metrics, self._pem, site, self.reactor
            )
            self.metrics_listener.setServiceParent(self)
            self.listeners.append(self.metrics_listener)

    def _sample(self) -> None:
        """Every SAMPLE_INTERVAL: read the active calls' jitter for their call records."""
        if self.observer is not None:
            self.observer.sample()

    def _track_protocol(self, protocol: Any) -> None:
        """Remember *protocol* (stopService BYEs its calls) and give its core our hooks."""
        self.protocols.add(protocol)
        core = getattr(protocol, "core", None)
        if core is not None:
            core.admission = self.admission
            core.observer = self.observer
            core.replaces_lookup = self.find_dialog

    def admission(self, request: Any) -> int | None:
        """The cores' admission check: None while we take calls, else a Retry-After.

        While draining every new INVITE and OPTIONS probe gets 503; at the service's call
        cap (:attr:`max_calls`, configured or derived, counted over all flows by
        :meth:`active_call_count`) OPTIONS gets 503, so a load balancer probing us sends
        its calls elsewhere, while an INVITE still gets what the cap answers (486 Busy
        Here, RFC 3261 §21.4.24, or 503 for the derived capacity).
        """
        if self.draining:
            return RETRY_AFTER
        if request.method == "OPTIONS" and self.active_call_count() >= self.max_calls:
            return RETRY_AFTER
        return None

    def _protocol_kwargs(self) -> dict[str, Any]:
        return {
            "dialog_class": self.inbound_dialog_class,
            "media_config": self.media_config,
            # Per flow only when configured: the derived capacity is a service-wide 503.
            "max_calls": self.config.max_calls,
            "limits": self.connection_limits,
            "trace": self.config.trace_sip,
        }

    def _add_client(self, aor: SipURI) -> None:
        from voiptwisted.sip.connect import build_client

        if not self.config.verify_tls:
            log.warn(
                "TLS certificate verification is OFF (--no-verify-tls): anyone on the path "
                "can impersonate {host} and read your calls",
                host=aor.host,
            )
        self.client = build_client(
            aor,
            password=self.config.password,
            ca_file=self.config.ca_file,
            verify=self.config.verify_tls,
            keepalive=self.config.keepalive,
            dns_server=self.config.dns_server,
            reactor=self.reactor,
            instance_id=self._instance_id(),
            protocol_kwargs=self._protocol_kwargs(),
            on_protocol=self._track_protocol,
            auth_realms=self.config.auth_realms,
            realm_credentials=self.config.realm_credentials,
            allow_legacy_digest=self.config.allow_legacy_digest,
        )
        self.client.setServiceParent(self)
        observers = getattr(self.client.endpoint, "flow_lost_observers", None)
        if observers is not None:
            observers.append(self._flow_lost)

    def _instance_id(self) -> str:
        """The stable ``+sip.instance`` (RFC 5626 §4.1) kept in ``state_dir``, read only.

        When there is none yet (or it is unreadable) a fresh one is used and saved by
        ``startService`` (:meth:`_save_instance_id`), so constructing writes nothing.
        """
        from voiptwisted.sip.connect import INSTANCE_ID_FILE
        from voiptwisted.sip.registration import normalize_instance_id

        path = self.config.state_dir / INSTANCE_ID_FILE
        try:
            with open(path, encoding="ascii") as handle:
                return normalize_instance_id(handle.read(200))
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        self._unsaved_instance_id = f"urn:uuid:{uuid.uuid4()}"
        return self._unsaved_instance_id

    def _save_instance_id(self) -> None:
        """Write the instance id :meth:`_instance_id` made up, atomically, once."""
        from voiptwisted.sip.connect import INSTANCE_ID_FILE

        value, self._unsaved_instance_id = self._unsaved_instance_id, None
        if value is None:
            return
        state_dir = self.config.state_dir
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            temporary = state_dir / f"{INSTANCE_ID_FILE}.{os.getpid()}.tmp"
            temporary.write_text(value + "\n", encoding="ascii")
            os.replace(temporary, state_dir / INSTANCE_ID_FILE)
        except OSError as e:
            log.warn(
                "cannot save the instance id in {dir}: {why}; the registrar will see a new "
                "one next time (RFC 5626 §4.1)",
                dir=str(state_dir),
                why=e.strerror,
            )

    def _add_listener(self, description: str, aor: SipURI | None) -> None:
        listener_aor = aor or SipURI.parse("sip:voip@127.0.0.1")
        # The protocol kwargs' ``limits`` become the factory's: every flow gets them inbound.
        factory = _TrackingFactory(
            self._track_protocol, aor=listener_aor, reactor=self.reactor, **self._protocol_kwargs()
        )
        listener = _Listener(description, self._pem, factory, self.reactor)
        listener.setServiceParent(self)
        self.listeners.append(listener)
        if self.listener is None:
            self.listener = listener
            self.listen_description = description

    # -- running -------------------------------------------------------------------------

    def call_uri(self) -> str | None:
        """The URI a direct caller uses to reach our listener (None when not on TLS/TCP)."""
        description = self.listen_description
        if description is None:
            return None
        kind, _, rest = description.partition(":")
        port = rest.split(":", 1)[0]
        if not port.isdigit():
            return None
        transport = {"ssl": "tls", "tls": "tls", "udp": "udp"}.get(kind.lower(), "tcp")
        user = self.config.aor.user if self.config.aor is not None else "echo"
        return f"sip:{user}@127.0.0.1:{port};transport={transport}"

    def privilegedStartService(self) -> None:
        """Bind every listener (while the process may still hold privileges)."""
        for listener in self.listeners:
            listener.privilegedStartService()

    def startService(self) -> None:
        """Save the instance id; once every listener listens, start the registration,
        log how to reach us and place the ``dial`` call.  See :meth:`when_listening`."""
        Service.startService(self)
        self.draining = False
        self._save_instance_id()
        if self.cdr_writer is not None:
            try:
                self.cdr_writer.open()
            except OSError as e:
                log.error("cannot open the call record file {path}: {why}",
                          path=self.cdr_writer.path, why=e.strerror)
        if self.config.cdr is not None:
            from twisted.internet.task import LoopingCall

            self._sampler = LoopingCall(self._sample)
            self._sampler.clock = self.reactor
            self._sampler.start(SAMPLE_INTERVAL, now=False)
        for listener in self.listeners:
            listener.startService()
        self.when_listening().addCallbacks(self._listening, self._start_failed)

    def when_listening(self) -> defer.Deferred[list[Any]]:
        """Fires with every listener's listening port once all listen (``[]`` without
        listeners), or fails with the first :class:`ListenFailed`.  Call it after
        ``startService``."""
        waiting = [listener.when_listening() for listener in self.listeners]
        d = defer.gatherResults(waiting, consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure if f.check(defer.FirstError) else f)
        return d

    def when_finished(self) -> defer.Deferred[int]:
        """Fires with an exit status once this service has nothing more to do.

        0: the ``dial`` call was answered and has ended; 1: it failed, or the service
        could not start (a listener failed).  A service that answers calls never
        finishes by itself.  The service does not act on it: the host decides (the
        ``twistd voip`` plugin stops the reactor and exits with the status).
        """
        if self.exit_status is not None:
            return defer.succeed(self.exit_status)
        waiter: defer.Deferred[int] = defer.Deferred(self._finished.remove)
        self._finished.append(waiter)
        return waiter

    def _listening(self, ports: list[Any]) -> None:
        if not self.running:
            return
        for child in self:
            if not child.running:
                child.startService()
        uri = self.call_uri()
        if uri is not None:
            log.info(
                "answering calls with {app} on {uri}",
                app=self.dialog_class.__name__,
                uri=uri,
            )
        if self.config.aor is None and not self.config.listen and uri is not None:
            log.info("try it: {command}", command=baresip_command(uri))
        if self.client is not None:
            waiting = self.client.client.whenConnected(failAfterFailures=1)
            waiting.addErrback(self._first_connection_failed)
        if self.config.dial is not None:
            self._dial()

    def _start_failed(self, failure: Failure) -> None:
        """One error line per listener that failed; the ones that listen are closed."""
        self.start_failure = failure.value
        for listener in self.listeners:
            listener.when_listening().addErrback(
                lambda f: log.error("{error}", error=str(f.value))
            )
        for listener in self.listeners:
            if listener.running:
                listener.stopService()
        self._finish(1)

    def _first_connection_failed(self, failure: Any) -> None:
        """One clear line when the registrar cannot be reached; ClientService keeps retrying."""
        if failure.check(defer.CancelledError):
            return
        aor = self.config.aor
        tried = self.client.endpoint.tried
        log.warn(
            "cannot connect to the registrar of {aor} ({targets}): {why}; "
            "retrying with backoff (1-60 s)",
            aor=aor.aor if aor is not None else "?",
            targets=", ".join(tried) if tried else "no address found",
            why=failure.getErrorMessage(),
        )

    def place_call(
        self, target: str | SipURI, session_class: type | None = None, **session_kwargs: Any
    ) -> defer.Deferred[Any]:
        """Call *target*; fires with the answered dialog (``dialog_class``'s instance).

        With ``config.aor`` the call goes through the registered flow: it waits for the
        registration first, and fails with ``RegistrationFailed`` when the registrar
        refuses us.  RFC 3263 §4.3: when our server fails the INVITE itself (503, 408 or
        the flow dying before any early dialog), the flow moves to the next server of the
        registrar's DNS list, registers there and the call is placed again; a 503's
        Retry-After keeps that server out of the list until it has passed.

        Without an AOR the call goes straight to *target* (:meth:`direct_flow`): its host
        is located with RFC 3263 (DNS SRV unless it has a port or an IP address), the
        flow is TLS unless the URI says ``;transport=tcp`` and the certificate is
        verified against the target's host (``config.ca_file`` trusted besides the
        platform's CAs; ``config.verify_tls`` False turns that off).  A flow already open
        to the same destination is reused.  We are ``sip:voip@127.0.0.1`` on it.

        ``session_class`` defaults to the dialog class's ``session_class`` (the
        ``--app``'s) or ``EchoSession``.  Fails with ``CallFailed`` carrying the final
        status when the call is not answered, and with the :class:`ListenFailed` of a
        service that could not start.  Cancelling the Deferred ends the attempt
        wherever it is: stops waiting for the registration or the connection, or cancels
        the INVITE (CANCEL once a provisional response arrived, RFC 3261 §9.1); it then
        fails with ``CancelledError``.
        """
        from voiptwisted.media.session import EchoSession
        from voiptwisted.sip.uri import InvalidURI

        if self.start_failure is not None:
            return defer.fail(self.start_failure)
        if session_class is None:
            session_class = getattr(self.dialog_class, "session_class", EchoSession)
            session_kwargs = {**getattr(self.dialog_class, "session_kwargs", {}), **session_kwargs}

        def dial(protocol: Any) -> defer.Deferred[Any]:
            dialog = self.dialog_class(sip=protocol)
            self.dialed = dialog
            dialog.follow_redirects = self.config.follow_redirects
            self.bound_duration(dialog)
            d = dialog.dial(target, session_class=session_class, **session_kwargs)
            if client is not None:
                d.addErrback(server_failed, protocol, dialog)
            return d

        client = self.client
        if client is None:
            try:
                uri = target if isinstance(target, SipURI) else SipURI.parse(str(target))
                flow = self.direct_flow(uri)
            except (InvalidURI, ValueError) as e:
                return defer.fail(e)
            return flow.addCallback(dial)
        moves = [max(1, getattr(client.endpoint, "target_count", 1) - 1)]

        def server_failed(failure: Any, protocol: Any, dialog: Any) -> Any:
            from voiptwisted.apps import shown_party
            from voiptwisted.sip.dialog import CallFailed

            ours = failure.check(ConnectionDone, ConnectionLost) or (
                failure.check(CallFailed) and failure.value.status_code in (408, 503)
            )
            if not ours or dialog.remote_tag is not None or moves[0] <= 0:
                return failure
            if not client.fail_over(protocol, getattr(failure.value, "retry_after", None)):
                return failure
            moves[0] -= 1
            log.warn(
                "call to {target}: {why} from the server; moving to the next one",
                target=shown_party(str(target), full=self.config.trace_sip),
                why=failure.getErrorMessage(),
            )
            client.registration.connection_lost(protocol)
            return client.registration.when_registered().addCallback(dial)

        return client.registration.when_registered().addCallback(dial)

    def direct_flow(self, target: SipURI) -> defer.Deferred[Any]:
        """A flow straight to *target*'s server (no registrar): fires with its protocol.

        An open flow to the same destination (scheme, transport, host, port, ``maddr``)
        is reused, and callers asking while it connects share that connection attempt
        (:func:`voiptwisted.sip.connect.connect` makes it: RFC 3263, TLS verified against
        the target's host unless ``config.verify_tls`` is False).  A flow found without
        calls (checked every :data:`DIRECT_FLOW_IDLE` seconds) is closed.  Cancelling the Deferred
        stops this caller's wait; the attempt itself is given up once no caller waits.
        Raises ValueError for a target that cannot be reached that way (UDP).
        """
        if not self.running:
            return defer.fail(RuntimeError("the VoIPService is not running"))
        key = _destination(target)
        protocol = self._direct_flows.get(key)
        if protocol is not None and protocol.is_connected:
            return defer.succeed(protocol)
        attempt = self._connecting.get(key)
        if attempt is None:
            attempt = _SharedAttempt(self._connect_direct(target), self._connecting, key)
            self._connecting[key] = attempt
        return attempt.wait()

    def _connect_direct(self, target: SipURI) -> defer.Deferred[Any]:
        from voiptwisted.sip.connect import DIRECT_AOR, connect
        from voiptwisted.sip.digest import Credentials

        config = self.config  # without verify_tls the endpoint warns on every connect
        kwargs = self._protocol_kwargs()
        if config.password is not None or config.realm_credentials:
            kwargs["credentials"] = Credentials(
                "", config.password, realms=config.auth_realms,
                table=config.realm_credentials,
                allow_legacy_digest=config.allow_legacy_digest,
            )  # fmt: skip
        d = connect(
            target, aor=DIRECT_AOR, reactor=self.reactor, ca_file=config.ca_file,
            verify=config.verify_tls, dns_server=config.dns_server, **kwargs,
        )  # fmt: skip
        key = _destination(target)

        def connected(protocol: Any) -> Any:
            self._track_protocol(protocol)
            self._direct_flows[key] = protocol
            self._close_when_idle(protocol, key)
            return protocol

        return d.addCallback(connected)

    def _close_when_idle(self, protocol: Any, key: tuple[Any, ...]) -> None:
        """Every DIRECT_FLOW_IDLE seconds: close the direct flow if it carries nothing."""

        def check() -> None:
            if protocol.is_connected and (protocol.dialog_count or protocol.transaction_count):
                self.reactor.callLater(DIRECT_FLOW_IDLE, check)
                return
            if self._direct_flows.get(key) is protocol:
                del self._direct_flows[key]
            if protocol.is_connected:
                log.info("closing the idle flow to {peer}", peer=protocol.peer_host)
                protocol.close()

        self.reactor.callLater(DIRECT_FLOW_IDLE, check)

    def when_registered(self) -> defer.Deferred[Any]:
        """Fires with the registered flow's protocol: at once when registered, else on the
        next success.  Any number of waiters.

        Fails with ``RegistrationFailed`` when the registrar refuses us (the service keeps
        retrying, so a later call may succeed) or the service stops, and at once with
        RuntimeError without ``config.aor``.  Cancelling it only stops that wait.
        """
        if self.client is None:
            return defer.fail(RuntimeError("no AOR to register (config.aor is None)"))
        return self.client.registration.when_registered()  # type: ignore[no-any-return]

    def when_disconnected(self) -> defer.Deferred[None]:
        """Fires with None the next time the registrar's flow is lost or, at the latest,
        once the service has stopped.  Any number of waiters.

        The service reconnects and registers again by itself after a lost flow: wait with
        :meth:`when_registered`.  Without an AOR it fires when the service has stopped.
        Cancelling it only stops that wait.
        """
        waiter: defer.Deferred[None] = defer.Deferred(self._disconnect_waiters.remove)
        self._disconnect_waiters.append(waiter)
        return waiter

    def _flow_lost(self, protocol: Any = None) -> None:
        waiters, self._disconnect_waiters = self._disconnect_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _dial(self) -> None:
        from voiptwisted.apps import shown_party

        target = shown_party(str(self.config.dial), full=self.config.trace_sip)

        def on_answer(dialog: Any) -> defer.Deferred[int]:
            log.info("call to {target} answered", target=target)
            return dialog.when_ended().addCallback(lambda _: 0)

        def on_failure(failure: Any) -> int:
            log.error(
                "call to {target} failed: {why}",
                target=target,
                why=failure.getErrorMessage(),
            )
            return 1

        d = self.place_call(self.config.dial)
        d.addCallbacks(on_answer, on_failure).addCallback(self._finish)

    def _finish(self, status: int) -> None:
        """Record the exit status and tell every :meth:`when_finished` waiter."""
        if self.exit_status is not None:
            return
        self.exit_status = status
        waiters, self._finished = self._finished, []
        for waiter in waiters:
            waiter.callback(status)

    # -- stopping ------------------------------------------------------------------------

    def active_dialogs(self) -> list[Any]:
        """Every call any of our flows still tracks."""
        from voiptwisted.sip.dialog import DialogState

        found = []
        for protocol in list(self.protocols):
            for dialog in protocol.dialogs:
                if dialog.state is not DialogState.TERMINATED:
                    found.append(dialog)
        return found

    def find_dialog(self, call_id: str, local_tag: str, remote_tag: str) -> Any:
        """One of our calls on any flow by its IDs (RFC 3891 §3: the call an INVITE with
        Replaces takes the place of may have come over another flow), or None."""
        for protocol in list(self.protocols):
            core = getattr(protocol, "core", protocol)
            dialog = core.find_dialog(call_id, local_tag, remote_tag)
            if dialog is not None:
                return dialog
        return None

    def bound_duration(self, dialog: Any) -> None:
        """Hang *dialog* up (BYE, or 480 while ringing) ``max_call_duration`` seconds from
        now, unless it ended before; nothing when no duration is configured."""
        seconds = self.config.max_call_duration
        if not seconds:
            return

        def too_long() -> None:
            log.info(
                "call {call_id}: max_call_duration of {t:g} s reached, hanging up",
                call_id=dialog.call_id, t=seconds,
            )
            dialog.bye()

        timer = self.reactor.callLater(seconds, too_long)
        dialog.when_ended().addCallback(lambda _: timer.active() and timer.cancel())

    def active_call_count(self) -> int:
        """How many calls are ringing, up or ending over all flows."""
        return len(self.active_dialogs())

    def drain(self, timeout: float | None = None) -> defer.Deferred[None]:
        """Stop taking calls and wait for the active ones to end; fires with None then.

        From now on new INVITEs and OPTIONS probes get 503 with Retry-After (so a load
        balancer such as Kamailio's dispatcher sends new calls elsewhere), while the calls
        already up go on.  When they have all ended, or *timeout* seconds (default
        ``config.drain_timeout``; 0: at once) have passed, the returned Deferred fires;
        the calls still up are left for the caller to end (``stopService`` BYEs them,
        un-registers and closes every flow).  The service keeps listening and registered:
        call ``stopService`` (SIGTERM does, in ``twistd voip``) to finish.  Calling it
        again returns a new Deferred for the same drain.
        """
        if timeout is None:
            timeout = self.config.drain_timeout
        waiter: defer.Deferred[None] = defer.Deferred()
        if self._drained is None and self.draining:  # an earlier drain already finished
            waiter.callback(None)
            return waiter
        if self._drained is not None:
            self._drained.append(waiter)
            return waiter
        self.draining = True
        self._drained = [waiter]
        active = self.active_call_count()
        if active and timeout > 0:
            log.info("draining: {n} call(s) may go on for up to {t} s", n=active, t=timeout)
            self._drain_timer = self.reactor.callLater(timeout, self._drain_timed_out)
        self._wait_for_calls()
        return waiter

    def _wait_for_calls(self) -> None:
        """Fire the drain's waiters once no call is left (re-checked as each batch ends)."""
        if self._drained is None:
            return
        dialogs = self.active_dialogs()
        if dialogs and self._drain_timer is not None:
            ended = defer.DeferredList([dialog.when_ended() for dialog in dialogs])
            ended.addCallback(lambda _: self._wait_for_calls())
            return
        self._drain_done()

    def _drain_timed_out(self) -> None:
        self._drain_timer = None
        log.info("drain timeout: {n} call(s) still up", n=self.active_call_count())
        self._drain_done()

    def _drain_done(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        waiters, self._drained = self._drained or [], None
        for waiter in waiters:
            waiter.callback(None)

    def stopService(self) -> defer.Deferred[None]:
        """Drain (:meth:`drain`, up to ``config.drain_timeout``), then BYE every call still
        up, un-register (Expires: 0) and close every flow: within STOP_TIMEOUT of the drain.

        Never fails: what did not finish in time is logged in one line.  Flows still in
        their TLS handshake carry nothing and are aborted at once (a server that never
        answers the handshake held SIGTERM for minutes, issue 14 finding 12).
        """
        for protocol in list(self.protocols):
            guard = getattr(protocol, "guard", None)
            if guard is not None and guard.handshaking:
                protocol.close()
        return self.drain().addCallback(lambda _: self._hang_up_and_close())

    def _hang_up_and_close(self) -> defer.Deferred[Any]:
        dialogs = self.active_dialogs()
        if dialogs:
            log.info("hanging up {n} call(s)", n=len(dialogs))
        byes = [defer.maybeDeferred(dialog.bye) for dialog in dialogs]
        ended: defer.Deferred[Any] = defer.DeferredList(byes, consumeErrors=True)
        ended.addTimeout(STOP_TIMEOUT / 2, self.reactor)
        ended.addErrback(
            lambda f: log.warn("{n} call(s) did not confirm BYE in time", n=len(byes))
        )
        ended.addCallback(lambda _: self._stop_children())
        ended.addCallback(lambda _: self._close_flows())
        ended.addBoth(self._stop_records)
        ended.addBoth(self._stopped)
        ended.addTimeout(STOP_TIMEOUT, self.reactor)
        ended.addErrback(
            lambda f: log.warn("stopping took too long: {why}", why=f.getErrorMessage())
        )
        return ended

    def _stopped(self, result: Any) -> Any:
        """Everything is closed: :meth:`when_disconnected` waiters learn it."""
        self._flow_lost()
        return result

    def _stop_records(self, result: Any) -> Any:
        """Stop sampling; close the call record file once every call has been written."""
        sampler, self._sampler = self._sampler, None
        if sampler is not None and sampler.running:
            sampler.stop()
        if self.cdr_writer is not None:
            self.cdr_writer.close()
        return result

    def _stop_children(self) -> defer.Deferred[Any]:
        """``MultiService.stopService`` for the children that started (after a failed
        start the registration never did)."""
        Service.stopService(self)
        stopping = [
            defer.maybeDeferred(child.stopService) for child in reversed(list(self))
            if child.running
        ]  # fmt: skip
        return defer.DeferredList(stopping)

    def _close_flows(self) -> defer.Deferred[Any]:
        """Close every flow; fires once each socket flow has sent what it still buffered
        and closed.  Without that wait the reactor's shutdown (``disconnectAll``) drops a
        last response still in the write buffer: the 200 to the BYE that ended a drain."""
        from twisted.internet.interfaces import ISystemHandle

        closing = []
        for protocol in list(self.protocols):
            transport = protocol.transport
            if transport is None:
                continue
            if ISystemHandle.providedBy(transport):  # a real socket (TCP, or TLS over it)
                closing.append(_when_closed(protocol))
            protocol.close()
        return defer.DeferredList(closing)


def _destination(uri: SipURI) -> tuple[Any, ...]:
    """What makes two targets the same destination for a direct flow: the scheme (what
    the certificate is checked against follows it), transport, host, port and maddr."""
    return (
        uri.scheme, uri.transport, str(uri.host).lower(), uri.port,
        uri.parameters.get("maddr"),
    )  # fmt: skip


class _SharedAttempt:
    """One connection attempt several callers wait on; each may stop waiting
    (cancel) and the attempt is cancelled once nobody waits any more."""

    def __init__(
        self, attempt: defer.Deferred[Any], table: dict[Any, _SharedAttempt], key: Any
    ) -> None:
        self.attempt = attempt
        self.waiters: list[defer.Deferred[Any]] = []
        self._table, self._key = table, key
        attempt.addBoth(self._settled)

    def wait(self) -> defer.Deferred[Any]:
        waiter: defer.Deferred[Any] = defer.Deferred(self._left)
        self.waiters.append(waiter)
        return waiter

    def _left(self, waiter: defer.Deferred[Any]) -> None:
        self.waiters.remove(waiter)
        if not self.waiters and not self.attempt.called:
            self.attempt.cancel()

    def _settled(self, result: Any) -> None:
        if self._table.get(self._key) is self:
            del self._table[self._key]
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)


def _when_closed(protocol: Any) -> defer.Deferred[None]:
    """A Deferred fired once *protocol*'s connection is lost (its ``connectionLost`` ran)."""
    closed: defer.Deferred[None] = defer.Deferred()
    original = protocol.connectionLost

    def connection_lost(*args: Any) -> None:
        del protocol.connectionLost  # the class's method again
        try:
            original(*args)
        finally:
            closed.callback(None)

    protocol.connectionLost = connection_lost
    return closed


class _TrackingFactory(SIPServerFactory):
    """A server-side factory that hands its protocols to the service (``track``), so
    stopService can BYE their calls and their cores get the service's hooks."""

    noisy = False

    def __init__(self, track: Callable[[Any], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._track = track

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self._track(protocol)
        return protocol

    def build_datagram_protocol(self) -> Any:
        """The SIP-over-UDP protocol of a ``udp:`` listener, with the same settings."""
        from voiptwisted.sip.datagram import SIPDatagramProtocol

        protocol = SIPDatagramProtocol(**self.kwargs)
        self._track(protocol)
        return protocol
