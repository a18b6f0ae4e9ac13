"""``SessionInitiationProtocol``: SIP (RFC 3261) over one TLS or TCP connection.

The protocol is the Twisted adapter of one stream flow over the sans-I/O
:class:`~voiptwisted.sip.core.UserAgentCore`: it frames the byte stream
(RFC 3261 §18.3), answers RFC 5626 §4.4.1 CRLF keepalives, parses messages
and feeds them to the core with the peer's address, writes what the core
hands back to the transport, and reports the TLS handshake and the end of
the flow.  Routing, the transaction and dialog tables and the answers the
core gives itself live in the core (one core per flow), so a datagram
adapter can reuse it.  The protocol provides
:class:`~voiptwisted.interfaces.IUserAgent` by delegating to its core:
``Dialog(sip=protocol)`` and the attributes the service and tests read
(``dialog_count``, ``contact``, ``public_address`` ...) keep working.
"""

from __future__ import annotations

import importlib
import re
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Generic, TypeVar, overload

from twisted.internet import interfaces
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from voiptwisted.interfaces import IUserAgent
from voiptwisted.sip.core import (
    ALLOWED_METHODS,
    SUPPORTED_OPTIONS,
    USER_AGENT,
    UserAgentCore,
    minimal_response,
)
from voiptwisted.sip.dialog import Dialog
from voiptwisted.sip.digest import Credentials
from voiptwisted.sip.framing import PING, PONG, FramingError, StreamFramer
from voiptwisted.sip.headers import SIPParseError
from voiptwisted.sip.limits import DEFAULT_LIMITS, ConnectionBudget, ConnectionLimits, FlowGuard
from voiptwisted.sip.message import Message, Request, Response
from voiptwisted.sip.transaction import ClientTransaction, Timers, TransactionTable
from voiptwisted.sip.uri import NetworkAddress, SipURI

__all__ = [
    "ALLOWED_METHODS",
    "SUPPORTED_OPTIONS",
    "USER_AGENT",
    "FlowEnd",
    "SIPClientFactory",
    "SIPServerFactory",
    "SessionInitiationProtocol",
    "minimal_response",
    "redact",
]

log = Logger()

T = TypeVar("T")

#: Established calls whose flow died, per factory, by (Call-ID, local tag), until a new flow
#: of that factory adopts them or they end (see ``SessionInitiationProtocol._adopt_orphans``).
_ORPHANS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], Dialog]] = (
    weakref.WeakKeyDictionary()
)

#: An Authorization header with its continuation lines (RFC 3261 §7.3.1); each quantifier
#: is possessive over a class the next token cannot start with, so the scan is linear.
_AUTH_RE = re.compile(
    rb"(?im)^((?:proxy-)?authorization[ \t]*+:)[^\r\n]*+(?:\r\n[ \t][^\r\n]*+)*+"
)
#: Every SDES ``inline:`` key, wherever it stands: a literal prefix, so the scan is linear
#: (a lazy ``a=crypto:...?inline:`` rescanned each line from every ``a=crypto:``).
_CRYPTO_RE = re.compile(rb"(?i)(inline:)[^\s|]+")


def redact(data: bytes) -> bytes:
    """*data* with credentials and SRTP keys removed, for trace logs.

    Authorization/Proxy-Authorization values, folded lines included, and SDES
    ``inline:`` keys (RFC 4568 §6.1) are replaced by ``<redacted>``.
    """
    data = _AUTH_RE.sub(rb"\1 <redacted>", data)
    return _CRYPTO_RE.sub(rb"\1<redacted>", data)


def default_media(reactor: interfaces.IReactorTime) -> tuple[Any, Any]:
    """The media class and config of calls on a flow given none: ``CallMedia`` with a
    ``MediaConfig`` on the flow's reactor (imported here, on first use: they load numpy)."""
    from voiptwisted.media.call import CallMedia, MediaConfig

    return CallMedia, MediaConfig(reactor=reactor)


def _with_stun(media_config: Any, stun_server: tuple[str, int]) -> Any:
    """*media_config* (a fresh default one when None) asking *stun_server* for the calls'
    public RTP address."""
    import dataclasses

    from voiptwisted.media.call import MediaConfig

    if media_config is None:
        return MediaConfig(stun_server=stun_server)
    return dataclasses.replace(media_config, stun_server=stun_server)


class FlowEnd:
    """The end of a flow as Deferreds: the reference's ``disconnected_event``, the Twisted
    way.  Each :meth:`wait` gets its own Deferred (one waiter's callbacks cannot change
    another's result), fired with None when the flow ends, at once if it already has."""

    def __init__(self) -> None:
        self.ended = False
        self._waiters: list[Deferred[None]] = []

    def wait(self) -> Deferred[None]:
        """A Deferred firing when the flow has ended; cancelling it only stops waiting."""
        if self.ended:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter

    def fire(self) -> None:
        """The flow has ended: fire every waiter (once; later calls do nothing)."""
        if self.ended:
            return
        self.ended = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)


class _CoreAttribute(Generic[T]):
    """An attribute of the adapter that reads and writes the same-named one of its core."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> _CoreAttribute[T]: ...
    @overload
    def __get__(self, instance: SessionInitiationProtocol, owner: type) -> T: ...
    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is None:
            return self
        return getattr(instance.core, self.name)

    def __set__(self, instance: SessionInitiationProtocol, value: T) -> None:
        setattr(instance.core, self.name, value)


@implementer(interfaces.IHandshakeListener, IUserAgent)
class SessionInitiationProtocol(Protocol):
    """A SIP user agent on one TLS/TCP flow (RFC 3261, RFC 5626 outbound).

    Inbound INVITEs become ``dialog_class.from_request(request, sip=self)``
    and ``call_received()``; :meth:`send_request` runs a client transaction
    for anyone (registration, dialogs).  Media for calls comes from
    ``media_class`` (default ``voiptwisted.media.call.CallMedia``) configured
    by ``media_config``.  All of it is done by :attr:`core`, the flow's
    :class:`~voiptwisted.sip.core.UserAgentCore`.

    ``reactor`` (required) runs every timer (``IReactorTime``) and binds the RTP sockets
    of calls with the default media (``IReactorUDP``); whoever builds the protocol (the
    service, a factory, :meth:`run`) passes its own, so nothing here reaches for the
    global reactor.

    ``credentials`` answer 401/407 challenges to our INVITEs, only for the realms
    they allow (`voiptwisted.sip.digest.Credentials`); a ``(username, password)``
    tuple allows no realm by itself (share the `Registration`'s Credentials, as
    `voiptwisted.sip.connect.build_client` does, to allow the registrar's).

    Hooks set by the service: ``registration`` (``connection_made(self)`` /
    ``connection_lost(self, reason)``) and ``keepalive`` (the same plus
    ``pong_received()``).
    """

    registration: Any = None
    keepalive: Any = None
    #: The bounds this flow applies (:class:`~voiptwisted.sip.limits.ConnectionLimits`):
    #: an outbound flow only the TLS-handshake timeout, an ``inbound`` one (set by
    #: :class:`SIPServerFactory`) every limit.
    limits: ConnectionLimits = DEFAULT_LIMITS
    inbound: bool = False
    #: The listener's shared :class:`~voiptwisted.sip.limits.ConnectionBudget` (inbound).
    budget: ConnectionBudget | None = None
    #: False when the listener's connection cap refused this connection (closed at once).
    admitted: bool = True
    #: Class-level settings of subclasses handed to each new core (see __init_subclass__).
    _core_defaults: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Keep the reference's ``class MySession(SessionInitiationProtocol): dialog_class =
        MyDialog`` (and ``dialog_limit = n``) working: such class attributes become the
        defaults of each instance's core, and the attributes delegating to it stay in place."""
        super().__init_subclass__(**kwargs)
        defaults = dict(cls._core_defaults)
        for name in ("dialog_class", "dialog_limit"):
            value = cls.__dict__.get(name)
            if value is not None and not isinstance(value, _CoreAttribute):
                defaults[name] = value
                delattr(cls, name)
        cls._core_defaults = defaults

    def __init__(
        self,
        *,
        aor: SipURI | str,
        dialog_class: type[Dialog] | None = None,
        media_config: Any = None,
        reactor: interfaces.IReactorTime,
        instance_id: str | None = None,
        credentials: Credentials | tuple[str, str] | None = None,
        keepalive_interval: float | timedelta = 30.0,
        max_calls: int | None = None,
        outbound_proxy: str | None = None,
        trace: bool = False,
        media_class: Any = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        if dialog_class is None:
            dialog_class = self._core_defaults.get("dialog_class")
        self.core = UserAgentCore(
            aor=aor,
            send=self._write,
            reactor=reactor,
            dialog_class=dialog_class,
            media_class=media_class,
            media_config=media_config,
            media_defaults=default_media,
            credentials=credentials,
            max_calls=max_calls,
            outbound_proxy=outbound_proxy,
            agent=self,
        )
        if "dialog_limit" in self._core_defaults:
            self.core.dialog_limit = self._core_defaults["dialog_limit"]
        self.instance_id = instance_id
        if isinstance(keepalive_interval, timedelta):
            keepalive_interval = keepalive_interval.total_seconds()
        self.keepalive_interval = float(keepalive_interval)
        self.trace = trace
        if limits is not None:
            self.limits = limits
        self._framer = StreamFramer()
        self.transport: Any = None
        #: The peer's host while connected and after: whose orphaned calls it may claim.
        self.peer_host: str | None = None
        self._to_refresh: list[Dialog] = []
        self._registered_waiter: Deferred[Any] | None = None
        self.guard: FlowGuard | None = None
        self._end = FlowEnd()

    def __repr__(self) -> str:
        return f"<SessionInitiationProtocol aor={self.aor!s} dialogs={self.dialog_count}>"

    # -- the reference's hooks --------------------------------------------------------------

    def on_registered(self) -> None:
        """Called each time the registrar accepts this flow's binding (RFC 3261 §10.3): on
        the first 2xx of each flow and after each recovered refusal, not on refreshes.

        Override it to place calls or start other work once reachable (the reference's
        hook); the base does nothing.  An exception here is logged and the flow stays up.
        """

    def when_disconnected(self) -> Deferred[None]:
        """A Deferred firing with None once this flow has ended (at once if it has): the
        reference's ``disconnected_event``.  Each call returns a new Deferred."""
        return self._end.wait()

    # -- the core's state, as attributes of the protocol (IUserAgent and monitoring) --------

    aor: _CoreAttribute[SipURI] = _CoreAttribute("Our address of record.")
    reactor: _CoreAttribute[interfaces.IReactorTime] = _CoreAttribute(
        "The injected reactor (IReactorTime for timers, IReactorUDP for calls' RTP)."
    )
    clock: _CoreAttribute[interfaces.IReactorTime] = _CoreAttribute(
        "The same reactor, as the IReactorTime the timers use."
    )
    credentials: _CoreAttribute[Credentials | None] = _CoreAttribute(
        "The digest Credentials answering 401/407 for the realms they allow, or None."
    )
    dialog_class: _CoreAttribute[type[Dialog]] = _CoreAttribute(
        "The Dialog subclass new inbound calls get."
    )
    dialog_limit: _CoreAttribute[int] = _CoreAttribute(
        "Calls one flow may hold, whatever ``max_calls`` says: an INVITE flood gets 503"
        " instead of growing the dialog and transaction tables without bound."
    )
    max_calls: _CoreAttribute[int | None] = _CoreAttribute(
        "Calls beyond this get 486 (None: no limit)."
    )
    outbound_proxy: _CoreAttribute[str | None] = _CoreAttribute(
        "A Route value for our out-of-dialog requests, or None."
    )
    public_address: _CoreAttribute[NetworkAddress | None] = _CoreAttribute(
        "Our address as the registrar saw it (RFC 3581), or None."
    )
    is_secure: _CoreAttribute[bool] = _CoreAttribute("Whether the flow is TLS.")
    media_class: _CoreAttribute[Any] = _CoreAttribute(
        "The CallMedia implementation (a seam for tests)."
    )
    media_config: _CoreAttribute[Any] = _CoreAttribute("The MediaConfig for calls.")

    @property
    def timers(self) -> Timers:
        """The core's :class:`~voiptwisted.sip.transaction.Timers`."""
        return self.core.timers

    @property
    def transactions(self) -> TransactionTable:
        """The core's transaction table."""
        return self.core.transactions

    @property
    def dialog_count(self) -> int:
        """Calls this protocol still tracks (ringing, established or ending)."""
        return self.core.dialog_count

    @property
    def transaction_count(self) -> int:
        """Live client and server transactions."""
        return self.core.transaction_count

    @property
    def pending_timer_count(self) -> int:
        """Pending ``IDelayedCall`` objects of this protocol, its transactions and dialogs."""
        return self.core.pending_timer_count

    @property
    def is_connected(self) -> bool:
        """Whether the flow is up (its transport is set)."""
        return self.transport is not None

    @property
    def local_address(self) -> NetworkAddress | None:
        """Our end of the transport, or None when not connected."""
        return self.core.local_address if self.transport is not None else None

    @property
    def media_host(self) -> str:
        """The address to put in SDP: configured public host, learned public address, or local."""
        return self.core.media_host

    @property
    def contact(self) -> str:
        """Our Contact value (see :meth:`UserAgentCore.contact_for`)."""
        return self.core.contact

    @property
    def allow_header(self) -> str:
        """The Allow value: the methods we handle, in SIPMethod order."""
        return self.core.allow_header

    @property
    def dialogs(self) -> list[Dialog]:
        return self.core.dialogs

    def contact_for(self, *uris: str | None) -> str:
        """:attr:`contact`, in its ``sips:`` form when any of *uris* is SIPS (§8.1.1.8)."""
        return self.core.contact_for(*uris)

    def _via(self) -> str:
        return self.core.via()

    def register_dialog(self, dialog: Dialog) -> None:
        """Track *dialog* in the core until it ends."""
        self.core.register_dialog(dialog)

    def drop_dialog(self, dialog: Dialog) -> None:
        """Forget *dialog* (idempotent)."""
        self.core.drop_dialog(dialog)

    def find_dialog(
        self, call_id: str, local_tag: str | None, remote_tag: str | None
    ) -> Dialog | None:
        """The dialog with these IDs (RFC 3261 §12: Call-ID, local and remote tag)."""
        return self.core.find_dialog(call_id, local_tag, remote_tag)

    def options_response(self, request: Request) -> Response:
        """200 to OPTIONS with our capabilities (RFC 3261 §11.2)."""
        return self.core.options_response(request)

    def method_not_allowed_response(self, request: Request) -> Response:
        """405 with Allow (RFC 3261 §8.2.1)."""
        return self.core.method_not_allowed_response(request)

    def request_received(self, request: Request) -> None:
        """Route a parsed request through the core, as if it came from the flow's peer."""
        self.core.request_received(request, self._peer())

    def response_received(self, response: Response) -> None:
        """Route a parsed response through the core."""
        self.core.response_received(response)

    # -- Twisted Protocol ------------------------------------------------------------------

    def connectionMade(self) -> None:
        """Start the flow: no Nagle delay, the core told our address, then the hooks.

        SIP messages are small and latency-bound (a 100 Trying then a 200 OK would
        otherwise wait for the peer's delayed ACK), so ``TCP_NODELAY`` is set.  Over TLS
        the flow is only reported up once the handshake has verified the peer.
        """
        if not self.admitted:
            # Over the listener's cap (finding 5): closed before it costs anything more.
            self._abort_transport()
            return
        secure = interfaces.ISSLTransport.providedBy(self.transport)
        self.guard = FlowGuard(
            self.limits, self.clock, self._limit_reached, inbound=self.inbound,
            busy=lambda: bool(self.core.dialog_count or self.core.transaction_count),
            budget=self.budget,
        )
        self.guard.connection_made(secure)
        self.core.connection_made(self._host_address(), secure)
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        peer = getattr(self.transport.getPeer(), "host", None)
        self.peer_host = peer
        if secure:
            log.info("SIP flow to {peer}: TLS handshake", peer=peer)
        else:
            log.info("SIP flow to {peer} up", peer=peer)
        self._adopt_orphans()
        for hook in (self.registration, self.keepalive):
            if hook is not None:
                hook.connection_made(self)
        if self._to_refresh:
            self._refresh_when_registered()

    def _host_address(self) -> NetworkAddress | None:
        """Our end of the transport as a NetworkAddress, or None when it has none."""
        host = self.transport.getHost()
        try:
            text = f"[{host.host}]" if ":" in host.host else host.host
            return NetworkAddress.parse(f"{text}:{host.port}")
        except (ValueError, AttributeError):
            return None

    def _peer(self) -> Any:
        """The flow's peer address (the ``source`` of what we feed the core)."""
        return self.transport.getPeer() if self.transport is not None else None

    def handshakeCompleted(self) -> None:
        """``IHandshakeListener``: the TLS handshake (and certificate check) succeeded."""
        if self.guard is not None:
            self.guard.handshake_completed()
        peer = getattr(self.transport.getPeer(), "host", None) if self.transport else None
        log.info("SIP flow to {peer} up (TLS)", peer=peer)

    def _adopt_orphans(self) -> None:
        """Carry on the established calls of this factory's dead flows, if its flows are ours.

        Only a factory whose ``outbound`` is true (the reconnecting client of one
        registration: ``SIPClientService``'s) hands every orphaned call to its new flow,
        which then refreshes their target (:meth:`Dialog.refresh_target`).  Connections
        accepted from peers never take over calls wholesale (issue 14 finding 7: any later
        connection used to adopt them, so Mallory's took Alice's call and the next caller
        inherited an attacker's); a peer's call is claimed by an in-dialog request from
        that peer's host instead (:meth:`_claim_orphan`).
        """
        factory = getattr(self, "factory", None)
        if factory is None or not getattr(factory, "outbound", False):
            return
        waiting = list(_ORPHANS.pop(factory, {}).values())
        adopted = []
        for dialog in waiting:
            if dialog.adoptable:
                dialog.adopt(self)
                adopted.append(dialog)
        if adopted:
            self._to_refresh = adopted
            log.info("{n} call(s) carried over to the new flow", n=len(adopted))

    def _refresh_when_registered(self) -> None:
        """Send the adopted calls' target refreshes once this flow is registered (RFC 5626
        §4.2.1: a flow is recovered when the registrar accepted it; our Contact then has
        the public address it learned), or at once on a flow without registration."""
        registration = self.registration
        if registration is None:
            self._refresh_targets(self)
            return
        waiter = registration.when_registered()
        self._registered_waiter = waiter
        waiter.addCallbacks(self._refresh_targets, self._registration_failed)

    def _refresh_targets(self, registered: Any) -> None:
        self._registered_waiter = None
        if registered is not self or self.transport is None:
            return
        dialogs, self._to_refresh = self._to_refresh, []
        for dialog in dialogs:
            if dialog.sip is self:
                dialog.refresh_target()

    def _registration_failed(self, failure: Failure) -> None:
        """Refused for now: the registration retries, the refreshes wait for its success."""
        self._registered_waiter = None
        if not failure.check(CancelledError) and self.transport is not None:
            self._refresh_when_registered()

    def _claim_orphan(self, request: Request) -> None:
        """An in-dialog request for a call whose flow died, from the same peer host: the
        call continues on this flow (RFC 3261 §12.2.2: a dialog is not bound to a
        connection, e.g. a proxy sends the BYE on a new one).  A request from any other
        host finds no such dialog (481): it cannot take the call over."""
        factory = getattr(self, "factory", None)
        orphans = _ORPHANS.get(factory) if factory is not None else None
        if not orphans or request.remote_tag is None:
            return
        key = (request.call_id, request.remote_tag)
        dialog = orphans.get(key)
        if (
            dialog is None
            or getattr(dialog.sip, "peer_host", None) != self.peer_host
            or self.peer_host is None
            or self.core.find_dialog(request.call_id, request.remote_tag, request.local_tag)
            is not None
            or (dialog.remote_tag is not None and dialog.remote_tag != request.local_tag)
            or not dialog.adoptable
        ):
            return
        del orphans[key]
        dialog.adopt(self)
        log.info("call {call_id} carried over to a new flow from {peer}",
                 call_id=dialog.call_id, peer=self.peer_host)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        """Fail pending client transactions; established calls keep their media (issue 3)."""
        self.transport = None
        self._to_refresh = []
        if self._registered_waiter is not None:
            self._registered_waiter.cancel()
        if self.guard is not None:
            self.guard.connection_lost()
        if self.budget is not None and self.admitted:
            self.budget.release()
            self.budget = None
        if not self.admitted:
            self._end.fire()
            return
        self.core.connection_lost(reason)
        factory = getattr(self, "factory", None)
        if factory is not None and self.dialog_count:
            orphans = _ORPHANS.setdefault(factory, {})
            for dialog in self.core.dialogs:
                if dialog.adoptable:
                    key = (dialog.call_id, dialog.local_tag)
                    orphans[key] = dialog
                    dialog.when_ended().addCallback(_forget_orphan, orphans, key, dialog)
        for hook in (self.keepalive, self.registration):
            if hook is not None:
                hook.connection_lost(self, reason)
        self._end.fire()

    def dataReceived(self, data: bytes) -> None:
        if self.transport is None or not self.admitted:
            return
        try:
            frames = self._framer.feed(data)
        except FramingError as exc:
            self._framing_failed(exc, data)
            return
        guard = self.guard
        if guard is not None:
            # Bytes arrive over TLS only once the handshake is done.
            guard.handshake_completed()
            if any(frame not in (PING, PONG) for frame in frames):
                guard.message_received()
            guard.data_buffered(self._framer.buffered)
            if guard.closed:
                return
        for frame in frames:
            if frame == PING:
                if self.transport is not None:
                    self.transport.write(PONG)
            elif frame == PONG:
                if self.keepalive is not None:
                    self.keepalive.pong_received()
            else:
                self._frame_received(frame)
            if self.transport is None:
                return

    def _framing_failed(self, exc: FramingError, data: bytes) -> None:
        """513 or 400 when we can build it, then close: the stream is out of sync (§18.3)."""
        code = exc.status_code if exc.status_code in (400, 513) else 400
        log.warn("closing SIP flow: {error}", error=exc)
        self.core.receive_unparseable(data, code, self._peer())
        if self.transport is not None:
            self.transport.loseConnection()

    def _frame_received(self, frame: bytes) -> None:
        if self.trace:
            log.info("received:\n{text}", text=redact(frame).decode("utf-8", "replace"))
        try:
            message = Message.parse(frame)
        except SIPParseError as exc:
            if self.core.receive_unparseable(frame, exc.status_code or 400, self._peer()):
                log.info("400 to unparseable request: {error}", error=exc)
            else:
                log.warn("dropped unparseable message: {error}", error=exc)
            return
        if isinstance(message, Request) and message.remote_tag is not None:
            self._claim_orphan(message)
        self.core.receive(message, self._peer())

    # -- sending ---------------------------------------------------------------------------

    def _write(self, message: Request | Response, destination: Any) -> None:
        """What the core hands out goes to this flow's peer, whatever *destination* says."""
        data = bytes(message)
        if self.trace:
            log.info("sending:\n{text}", text=redact(data).decode("utf-8", "replace"))
        if self.transport is not None:
            self.transport.write(data)

    def send_message(self, message: Request | Response) -> None:
        """Write *message* (with our User-Agent) to the flow; dropped when not connected."""
        self.core.send_message(message)

    def send_stateless(self, request: Request) -> None:
        """Send a request outside any transaction (the ACK for a 2xx, §13.2.2.4): new Via."""
        self.core.send_stateless(request)

    def start_client_transaction(
        self,
        request: Request,
        *,
        on_provisional: Callable[[Response], None] | None = None,
        new_branch: bool = True,
    ) -> ClientTransaction:
        """Run a client transaction for *request* in the core and return it (§17.1)."""
        return self.core.start_client_transaction(
            request, on_provisional=on_provisional, new_branch=new_branch
        )

    def send_request(
        self,
        request: Request,
        *,
        provisional_callback: Callable[[Response], None] | None = None,
        new_branch: bool = True,
    ) -> Deferred[Response]:
        """:meth:`UserAgentCore.send_request` on this flow's core (the final response)."""
        return self.core.send_request(
            request, provisional_callback=provisional_callback, new_branch=new_branch
        )

    # -- library entry point ---------------------------------------------------------------

    @classmethod
    def run(
        cls,
        fn: Callable[[], object] | SipURI | str,
        aor: SipURI | str | None = None,
        dialog_class: type[Dialog] | None = None,
        *,
        no_verify_tls: bool = False,
        stun_server: tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> Deferred[SessionInitiationProtocol]:
        """The reference's entry point: connect to *aor*'s registrar, register, call *fn*
        (no arguments) once registered, then fire with the registered protocol.

        ``MySession.run(fn, aor, MyDialog)`` builds every flow from ``MySession``, so its
        :meth:`on_registered` runs too.  A password in the AOR (``sip:alice:pw@host``)
        answers the registrar's challenge; ``no_verify_tls`` turns TLS certificate checks
        off (insecure, for tests); ``stun_server`` (``(host, port)``) asks that server for
        the public RTP address of each call (no STUN server unless given).  Other keyword
        arguments go to :func:`voiptwisted.sip.connect.run`, which does the work
        (``reactor``, ``ca_file``, ``media_config`` ...).  If *fn* raises, the client is
        stopped and the Deferred fails with that error.  The older form ``run(aor,
        **kwargs)`` (no *fn*) is that function with the same arguments.

        ``sip.connect`` builds protocols, so it sits above this module: it is looked up by
        module name when called, which keeps the import graph free of a cycle.
        """
        connect = importlib.import_module("voiptwisted.sip.connect")
        if isinstance(fn, str):  # SipURI is a str: the older run(aor, **kwargs) form
            return connect.run(fn, **kwargs)  # type: ignore[no-any-return]
        if aor is None:
            raise TypeError("run(fn, aor, dialog_class) needs the AOR")
        aor = aor if isinstance(aor, SipURI) else SipURI.parse(aor)
        if aor.password and "password" not in kwargs:
            kwargs["password"] = aor.password
        if dialog_class is not None:
            kwargs["dialog_class"] = dialog_class
        if no_verify_tls:
            kwargs["verify"] = False
        if stun_server is not None:
            kwargs["media_config"] = _with_stun(kwargs.get("media_config"), stun_server)
        if cls is not SessionInitiationProtocol:
            kwargs["protocol_class"] = cls
        d: Deferred[SessionInitiationProtocol] = connect.run(aor, **kwargs)

        def registered(protocol: SessionInitiationProtocol) -> SessionInitiationProtocol:
            try:
                fn()
            except BaseException:
                protocol.service.stopService()
                raise
            return protocol

        return d.addCallback(registered)

    def close(self) -> None:
        """Close the flow; one still in its TLS handshake is aborted (a peer that never
        answers the handshake would otherwise hold the close, and a shutdown, forever)."""
        if self.transport is None:
            return
        if self.guard is not None and self.guard.handshaking:
            self._abort_transport()
        else:
            self.transport.loseConnection()

    def _limit_reached(self, reason: str) -> None:
        """The :class:`FlowGuard` found a bound crossed: drop the connection now.

        Aborted, not closed gracefully: the peer is not reading or not talking, so
        a graceful close would wait on it (a TLS close_notify, an unsent buffer).
        """
        peer = getattr(self._peer(), "host", None)
        log.info("closing SIP flow from {peer}: {reason}", peer=peer, reason=reason)
        self._abort_transport()

    def _abort_transport(self) -> None:
        """Drop the connection without waiting on the peer (``abortConnection``, which
        every TCP and TLS transport has; a transport without it is closed)."""
        if self.transport is not None:
            abort = getattr(self.transport, "abortConnection", self.transport.loseConnection)
            abort()


def _forget_orphan(
    _: object, orphans: dict[tuple[str, str], Dialog], key: tuple[str, str], dialog: Dialog
) -> None:
    """An orphaned call ended: it leaves its factory's orphan table."""
    if orphans.get(key) is dialog:
        del orphans[key]


class SIPClientFactory(Factory):
    """A plain factory building :class:`SessionInitiationProtocol` with fixed keyword arguments.

    Works with any Twisted endpoint, client or server.  ``registration`` and
    ``keepalive`` are set on each protocol built (the service's hooks).

    ``outbound=True`` says the flows are ours (a reconnecting client of one
    registrar): a new flow then carries on the established calls of the one that
    died and sends them a target refresh once registered.  Otherwise (the default,
    and right for a listener) a dead flow's calls continue only if an in-dialog
    request for them arrives from the same peer host; another peer's connection
    never takes them over.
    """

    protocol = SessionInitiationProtocol

    def __init__(
        self,
        *,
        registration: Any = None,
        keepalive: Any = None,
        protocol_class: type[SessionInitiationProtocol] | None = None,
        outbound: bool = False,
        **kwargs: Any,
    ) -> None:
        if protocol_class is not None:
            self.protocol = protocol_class
        self.outbound = outbound
        self.registration = registration
        self.keepalive = keepalive
        self.kwargs = kwargs

    def buildProtocol(self, addr: Any) -> SessionInitiationProtocol:
        proto = self.protocol(**self.kwargs)
        proto.factory = self
        if self.registration is not None:
            proto.registration = self.registration
        if self.keepalive is not None:
            proto.keepalive = self.keepalive
        return proto


class SIPServerFactory(SIPClientFactory):
    """:class:`SIPClientFactory` for a listener: every flow it builds is *inbound*.

    It applies ``limits`` (:class:`~voiptwisted.sip.limits.ConnectionLimits`, issue 14
    finding 5): at most ``max_connections`` open at once (more are aborted as soon as
    accepted, one warning per 10 s), and each flow gets the TLS-handshake,
    first-request, idle and partial-message timeouts and a share of the listener's
    budget of buffered octets.
    """

    def __init__(
        self,
        *,
        reactor: interfaces.IReactorTime,
        limits: ConnectionLimits | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(reactor=reactor, **kwargs)
        self.limits = limits if limits is not None else DEFAULT_LIMITS
        self.budget = ConnectionBudget(self.limits, reactor)

    def buildProtocol(self, addr: Any) -> SessionInitiationProtocol:
        proto = super().buildProtocol(addr)
        proto.inbound = True
        proto.limits = self.limits
        proto.admitted = self.budget.admit()
        if proto.admitted:
            proto.budget = self.budget
        return proto
