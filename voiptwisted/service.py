"""``VoIPService``: registration, keepalive, dialog routing and media wired into one service.

It is what ``twistd voip`` runs and what an existing Twisted application adds to its
own service tree (``VoIPService(ServiceConfig(...)).setServiceParent(application)``).

Without an AOR and without ``listen`` it is the *embedded default*: TLS on
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
from twisted.logger import Logger
from twisted.python.failure import Failure

from voiptwisted.sip.protocol import SIPClientFactory
from voiptwisted.sip.uri import SipURI

__all__ = [
    "EMBEDDED_PORT",
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
#: The embedded default's TLS port on 127.0.0.1 (the SIP-over-TLS port, RFC 3261 §19.1.2).
EMBEDDED_PORT = 5061


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
    a call on hold (0: never); see ``MediaConfig``.
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
    max_calls: int | None = None
    dialog_class: type | None = None
    dial: SipURI | None = None
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
        for name in ("rtp_timeout", "rtp_hold_timeout"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 or more seconds")


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
    with backoff, RFC 5626 keepalive); with ``config.listen`` (or neither: the embedded
    default on TLS 127.0.0.1:5061) it also accepts calls sent straight to it.  Inbound
    calls go to ``config.dialog_class``, at most ``config.max_calls`` at a time over all
    flows (486 Busy Here beyond).  ``config.dial`` places one call once registered;
    :meth:`when_finished` fires with 0 when it was answered and has ended, 1 otherwise.

    Listeners bind in ``privilegedStartService`` (or ``startService`` when the host does
    not call it); the registration starts only once every listener listens.  When one
    cannot, the start fails: one error line names the address and the reason,
    :meth:`when_listening` fails with :class:`ListenFailed`, :meth:`when_finished` fires
    with 1, and nothing else of this service runs.  The reactor and the rest of the host's
    services are never touched.
    """

    def __init__(self, config: ServiceConfig, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
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
        from voiptwisted.media.call import MediaConfig

        self.media_config = MediaConfig(
            port_range=config.rtp_ports,
            srtp=config.srtp if config.srtp_explicit else None,
            stun_server=config.stun_server,
            reactor=reactor,
            rtp_timeout=config.rtp_timeout,
            rtp_hold_timeout=config.rtp_hold_timeout,
        )
        # Left out, the policy follows the AOR ("required" for sips:) for every call.
        self.media_config.srtp = config.srtp
        if self.dialog_class is None:
            from voiptwisted.apps import EchoDialog

            self.dialog_class = EchoDialog
        self.inbound_dialog_class = self._limited(self.dialog_class)
        if config.aor is not None:
            self._add_client(config.aor)
        listen = [config.listen] if isinstance(config.listen, str) else list(config.listen or ())
        for description in listen:
            self._add_listener(description, config.aor)
        if not listen and config.aor is None:
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
        own flow, so the limit over all flows is enforced here (486, RFC 3261 §21.4.24).
        """
        service = weakref.ref(self)

        def call_received(dialog: Any) -> None:
            owner = service()
            limit = owner.config.max_calls if owner is not None else None
            if limit is not None and owner is not None and owner.active_call_count() > limit:
                log.info("486 to a call: max_calls={n} reached", n=limit)
                dialog.reject(486)
                return
            base.call_received(dialog)

        return type(
            base.__name__,
            (base,),
            {"call_received": call_received, "__module__": base.__module__,
             "__doc__": base.__doc__},
        )

    def _protocol_kwargs(self) -> dict[str, Any]:
        return {
            "dialog_class": self.inbound_dialog_class,
            "media_config": self.media_config,
            "max_calls": self.config.max_calls,
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
            on_protocol=self.protocols.add,
            auth_realms=self.config.auth_realms,
            realm_credentials=self.config.realm_credentials,
            allow_legacy_digest=self.config.allow_legacy_digest,
        )
        self.client.setServiceParent(self)

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
        factory = _TrackingFactory(
            self.protocols, aor=listener_aor, clock=self.reactor, **self._protocol_kwargs()
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
        self._save_instance_id()
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
        if self.config.dial is not None and self.client is not None:
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
        """Call *target* through the registered flow; fires with the answered dialog.

        Waits for the registration first.  ``session_class`` defaults to the dialog class's
        ``session_class`` (the ``--app``'s) or ``EchoSession``.  Fails with ``CallFailed``
        carrying the final status when the call is not answered, or with
        ``RegistrationFailed`` when the registrar refuses us.
        """
        if self.client is None:
            return defer.fail(RuntimeError("place_call needs a registered AOR (config.aor)"))
        from voiptwisted.media.session import EchoSession

        if session_class is None:
            session_class = getattr(self.dialog_class, "session_class", EchoSession)
            session_kwargs = {**getattr(self.dialog_class, "session_kwargs", {}), **session_kwargs}

        def dial(protocol: Any) -> defer.Deferred[Any]:
            dialog = self.dialog_class(sip=protocol)
            self.dialed = dialog
            return dialog.dial(str(target), session_class=session_class, **session_kwargs)

        return self.client.registration.when_registered().addCallback(dial)

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

    def active_call_count(self) -> int:
        """How many calls are ringing, up or ending over all flows."""
        return len(self.active_dialogs())

    def stopService(self) -> defer.Deferred[None]:
        """BYE every active call, un-register (Expires: 0), close every flow: within STOP_TIMEOUT.

        Never fails: what did not finish in time is logged in one line.
        """
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
        ended.addTimeout(STOP_TIMEOUT, self.reactor)
        ended.addErrback(
            lambda f: log.warn("stopping took too long: {why}", why=f.getErrorMessage())
        )
        return ended

    def _stop_children(self) -> defer.Deferred[Any]:
        """``MultiService.stopService`` for the children that started (after a failed
        start the registration never did)."""
        Service.stopService(self)
        stopping = [
            defer.maybeDeferred(child.stopService) for child in reversed(list(self))
            if child.running
        ]  # fmt: skip
        return defer.DeferredList(stopping)

    def _close_flows(self) -> None:
        for protocol in list(self.protocols):
            if protocol.transport is not None:
                protocol.close()


class _TrackingFactory(SIPClientFactory):
    """A server-side factory that remembers its protocols so stopService can BYE their calls."""

    noisy = False

    def __init__(self, protocols: weakref.WeakSet[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._protocols = protocols

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self._protocols.add(protocol)
        return protocol

    def build_datagram_protocol(self) -> Any:
        """The SIP-over-UDP protocol of a ``udp:`` listener, with the same settings."""
        from voiptwisted.sip.datagram import SIPDatagramProtocol

        protocol = SIPDatagramProtocol(**self.kwargs)
        self._protocols.add(protocol)
        return protocol
