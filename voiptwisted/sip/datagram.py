"""``SIPDatagramProtocol``: SIP over UDP (RFC 3261 §18) on the sans-I/O core.

One bound UDP socket, one :class:`~voiptwisted.sip.core.UserAgentCore` with
``reliable = False`` (so its transactions retransmit and linger, RFC 3261
§17), many peers.  The adapter:

* bounds datagrams: anything over 65,535 octets is dropped; a message whose
  Content-Length is larger than the datagram's body does not parse and is
  dropped, or answered 400 when it is a request whose headers can be read
  (§18.3); octets beyond Content-Length are discarded;
* stamps the top Via of each request with ``received`` (the source address,
  when it differs from sent-by, §18.2.1) and, when the request asked for it,
  ``rport`` (RFC 3581 §4: then ``received`` is always added);
* sends responses to the top Via's ``received`` (else sent-by) address, at the
  ``rport`` port when there is one, else the sent-by port or 5060 (§18.2.2,
  RFC 3581 §4);
* sends requests the core hands out without a destination to :attr:`peer`
  (the registrar or outbound proxy of a registered flow, RFC 5626) or, with no
  peer, to the top Route or the Request-URI (§8.1.2; a host name is resolved
  with the reactor's resolver, port 5060 by default);
* passes STUN datagrams to the ``keepalive`` hook (RFC 5626 §4.4.2) and drops
  bare CRLF keepalives.

A request over 1300 octets (:data:`MTU_LIMIT`; the path MTU is unknown) goes
over TCP to the same address and port (RFC 3261 §18.1.1), its top Via saying
``TCP``; its responses come back on that connection, retransmissions are not
sent (TCP is reliable) and a CANCEL or ACK of its transaction takes the same
connection (§9.1, §17.1.1.3).  When the connection cannot be made (refused,
reset, no answer in :data:`STREAM_CONNECT_TIMEOUT` seconds: a peer that only
does UDP) the request is sent over UDP after all, as §18.1.1 says, with one
warning, and that destination is sent large requests over UDP for
:data:`STREAM_RETRY_AFTER` seconds.

:class:`DatagramKeepalive` is the RFC 5626 §4.4.2 keep-alive of a UDP flow:
a STUN Binding request to the registrar every ``interval`` seconds (the
registrar's ``Flow-Timer`` wins).  A missing answer fails the flow (it
registers again) only when the registrar signalled outbound (``Require:
outbound`` in the REGISTER 2xx, RFC 5626 §4.2.1); otherwise the requests keep
the NAT binding open and the silence is logged once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from voiptwisted.interfaces import IUserAgent
from voiptwisted.rtp.stun import StunClient, StunError, StunTimeout, is_stun
from voiptwisted.sip.core import UserAgentCore
from voiptwisted.sip.dialog import Dialog
from voiptwisted.sip.digest import Credentials
from voiptwisted.sip.framing import PING, PONG, FramingError, StreamFramer
from voiptwisted.sip.headers import SIPParseError
from voiptwisted.sip.message import Message, Request, Response
from voiptwisted.sip.protocol import FlowEnd, default_media, redact
from voiptwisted.sip.uri import NetworkAddress, SipURI

__all__ = [
    "MAX_DATAGRAM",
    "MTU_LIMIT",
    "STREAM_CONNECT_TIMEOUT",
    "DatagramKeepalive",
    "SIPDatagramProtocol",
    "connect_stream",
    "over_stream",
    "stamp_via",
]

log = Logger()

#: RFC 3261 §18.3 / §18.1.1: the largest SIP message we accept over UDP.
MAX_DATAGRAM = 65535
#: RFC 3261 §18.1.1: requests larger than this belong on a congestion-controlled transport.
MTU_LIMIT = 1300
#: The receive buffer asked for (the kernel caps it at net.core.rmem_max): a burst of
#: datagrams while the reactor is busy must not be dropped, since an ACK lost here is
#: never retransmitted by its sender (RFC 3261 §17.1.1.3).
RECEIVE_BUFFER = 4 * 1024 * 1024
#: Seconds a TCP connect for a large request may take before it goes over UDP (§18.1.1).
STREAM_CONNECT_TIMEOUT = 5.0
#: Seconds a destination whose TCP connect failed is sent large requests over UDP.
STREAM_RETRY_AFTER = 64 * 0.5
#: At most this many TCP connections for large requests at once (more go over UDP).
MAX_STREAMS = 32
#: Seconds without a byte either way after which such a connection is closed (long enough
#: for an INVITE that rings for minutes to get its final response on it).
STREAM_IDLE_TIMEOUT = 300.0
#: At most this many transactions remembered as sent over TCP (their CANCEL/ACK follow).
MAX_STREAM_BRANCHES = 1024
#: What the socket reads at most (one more than accepted, so an oversized datagram is seen).
READ_SIZE = MAX_DATAGRAM + 1

Address = tuple[str, int]

#: Bind addresses that are no sent-by (a Via needs the address peers reach us at).
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def stamp_via(request: Request, source: Address) -> None:
    """Add ``received`` and ``rport`` to *request*'s top Via (RFC 3261 §18.2.1, RFC 3581 §4).

    ``received`` is the source IP when it differs from the sent-by host (a host
    name always differs), and always when the request asked for ``rport``;
    ``rport`` gets the source port.  Raises SIPParseError for a malformed Via.
    """
    top = request.top_via
    host, port = source
    wants_rport = top.rport is True
    if not wants_rport and top.host.strip("[]") == host:
        return
    top.params["received"] = host
    if wants_rport:
        top.params["rport"] = str(port)
    vias = request.headers.getlist("Via")
    request.headers["Via"] = ", ".join([str(top), *vias[1:]])


def response_target(response: Response, destination: Address | None) -> tuple[str, int]:
    """Where a response goes over UDP (RFC 3261 §18.2.2, RFC 3581 §4).

    The top Via's ``received`` (else *destination*'s host, the request's
    source, else the sent-by host) at its ``rport`` (else *destination*'s port
    when rport was asked for, else the sent-by port, else 5060).
    """
    via = response.top_via
    host = via.received or (destination[0] if destination is not None else via.host)
    rport = via.rport
    if isinstance(rport, int) and rport is not True:
        port = rport
    elif rport is True and destination is not None:
        port = destination[1]
    else:
        port = via.port or 5060
    return host.strip("[]"), port


def request_target(request: Request) -> tuple[str, int]:
    """Where a request without a flow goes (RFC 3261 §8.1.2, §18.1.1): the top Route's
    URI when there is one, else the Request-URI; its ``maddr`` or host, port 5060 unless
    given."""
    routes = request.headers.getlist("Route")
    text = routes[0].strip() if routes else request.uri
    if text.startswith("<"):
        text = text[1 : text.index(">")]
    uri = SipURI.parse(text)
    target = uri.maddr
    port = uri.port if uri.port_given else 5060
    return str(target.host), port


def over_stream(data: bytes) -> bytes:
    """*data* (a request) with its top Via's transport changed to TCP: what goes on the TCP
    connection of RFC 3261 §18.1.1 (the sent-by and branch stay, so the transaction and
    its responses match)."""
    request = Message.parse(data)
    top = request.top_via
    top.protocol = "SIP/2.0/TCP"
    vias = request.headers.getlist("Via")
    request.headers["Via"] = ", ".join([str(top), *vias[1:]])
    return bytes(request)


def _without_stream_address(frame: bytes) -> bytes:
    """A response that came back over the TCP connection of §18.1.1 without ``received``
    and ``rport`` on its top Via: they give that connection's address, not the UDP flow's,
    and must not become our public address (RFC 3581) -- the Contact would move to a TCP
    port nothing reads UDP on."""
    if frame.startswith(b"SIP/"):
        with contextlib.suppress(SIPParseError):
            response = Message.parse(frame)
            top = response.top_via
            if "received" in top.params or "rport" in top.params:
                top.params.pop("received", None)
                top.params.pop("rport", None)
                vias = response.headers.getlist("Via")
                response.headers["Via"] = ", ".join([str(top), *vias[1:]])
                return bytes(response)
    return frame


def connect_stream(reactor: Any, target: Address, protocol: Protocol) -> Deferred[Protocol]:
    """Open a TCP connection to *target* (an IP literal and port) for *protocol*, with
    *reactor* (``IReactorTCP``) and :data:`STREAM_CONNECT_TIMEOUT`."""
    host, port = target
    kind = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
    endpoint = kind(reactor, host.strip("[]"), port, timeout=STREAM_CONNECT_TIMEOUT)
    return connectProtocol(endpoint, protocol)


class _StreamLeg(Protocol):
    """One TCP connection large requests go over (RFC 3261 §18.1.1): writes what was sent
    before it connected, frames what comes back and hands each message to the adapter as
    if it were a datagram from *target*."""

    def __init__(self, owner: SIPDatagramProtocol, target: Address, clock: IReactorTime) -> None:
        self.owner = owner
        self.target = target
        self.clock = clock
        self.framer = StreamFramer()
        #: (TCP octets, UDP octets, branch) sent before the connection is up.
        self.pending: list[tuple[bytes, bytes, str]] = []
        self.up = False
        self._idle: IDelayedCall | None = None

    def send(self, stream_data: bytes, datagram: bytes, branch: str) -> None:
        if self.up and self.transport is not None:
            self._busy()
            self.transport.write(stream_data)
        else:
            self.pending.append((stream_data, datagram, branch))

    def _busy(self) -> None:
        """Bytes moved: the idle timer starts over."""
        if self._idle is not None and self._idle.active():
            self._idle.reset(STREAM_IDLE_TIMEOUT)
        else:
            self._idle = self.clock.callLater(STREAM_IDLE_TIMEOUT, self._close_idle)

    def _close_idle(self) -> None:
        self._idle = None
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionMade(self) -> None:
        self.up = True
        self._busy()
        log.info("large requests to {host}:{port} go over TCP (RFC 3261 §18.1.1)",
                 host=self.target[0], port=self.target[1])
        pending, self.pending = self.pending, []
        for stream_data, _, _ in pending:
            self.transport.write(stream_data)

    def dataReceived(self, data: bytes) -> None:
        self._busy()
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            log.info("closing the TCP connection to {host}: {error}", host=self.target[0],
                     error=exc)
            self.transport.loseConnection()
            return
        for frame in frames:
            if frame not in (PING, PONG):
                self.owner.datagramReceived(_without_stream_address(frame), self.target)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.up = False
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        self.owner._stream_closed(self)


def routable_address(toward: str = "192.0.2.1") -> str:
    """The local IPv4 address the system routes toward *toward* (no packet is sent:
    a UDP socket is only connected), for a Via sent-by when bound to 0.0.0.0."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((toward, 9))
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


@implementer(IUserAgent)
class SIPDatagramProtocol(DatagramProtocol):
    """A SIP user agent on one UDP socket (RFC 3261 §18): see the module docstring.

    The arguments are those of :class:`~voiptwisted.sip.protocol.SessionInitiationProtocol`
    (the same core does the work), plus *peer*: the ``(ip, port)`` requests without a
    destination go to (a registered flow's registrar), None for a listener.  Inbound
    dialogs get the core itself as their ``sip``; the protocol provides
    :class:`~voiptwisted.interfaces.IUserAgent` too, reading what it does not define from
    its core, so ``Dialog(sip=protocol)`` places calls over it.

    Hooks set by the client service: ``registration`` and ``keepalive``
    (``connection_made(self)`` / ``connection_lost(self, reason)``).
    """

    registration: Any = None
    keepalive: Any = None
    #: Live transactions beyond which a new request is dropped: over UDP every request,
    #: spoofed or not, holds a server transaction for up to 64*T1 (Timer J), so a flood
    #: must not grow the table without bound.  Retransmissions of known ones still match.
    max_transactions: int = 10000

    def __init__(
        self,
        *,
        aor: SipURI | str,
        dialog_class: type[Dialog] | None = None,
        media_config: Any = None,
        reactor: IReactorTime,
        instance_id: str | None = None,
        credentials: Credentials | tuple[str, str] | None = None,
        max_calls: int | None = None,
        outbound_proxy: str | None = None,
        trace: bool = False,
        media_class: Any = None,
        peer: Address | None = None,
        resolve: Callable[[str], Deferred[str]] | None = None,
        keepalive_interval: float = 30.0,
        limits: Any = None,
        stream_connector: Callable[[Address, Protocol], Deferred[Any]] | None = None,
    ) -> None:
        # *limits* (the stream adapter's ConnectionLimits) is taken so one set of protocol
        # arguments serves every transport; a UDP socket has no connections to bound, and
        # its datagrams are bounded by MAX_DATAGRAM and the transaction table cap.
        del limits
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
        )
        self.core.reliable = False
        self.instance_id = instance_id
        self.trace = trace
        self.peer = peer
        self.keepalive_interval = float(keepalive_interval)
        self._resolve = resolve
        self.transport: Any = None
        self._clock = reactor
        #: Opens the TCP connections of §18.1.1 (tests inject a fake).
        self.stream_connector = stream_connector or partial(connect_stream, reactor)
        self._streams: dict[Address, _StreamLeg] = {}
        #: branch -> (TCP destination, method) of requests sent over TCP; None for those
        #: that went over UDP because TCP failed (their retransmissions stay on UDP).
        self._stream_branches: dict[str, tuple[Address, str] | None] = {}
        self._no_stream_until: dict[Address, float] = {}
        #: Datagrams dropped (oversized, unparseable responses), for tests and monitoring.
        self.dropped = 0
        self._end = FlowEnd()

    def __repr__(self) -> str:
        return f"<SIPDatagramProtocol aor={self.core.aor!s} dialogs={self.dialog_count}>"

    # -- what the service, the registration and tests read ---------------------------------

    def __getattr__(self, name: str) -> Any:
        """IUserAgent's attributes and methods (``aor``, ``dialogs``, ``contact``,
        ``send_request``, ``start_client_transaction`` ...) are the core's; this adapter
        defines only what differs (``is_connected``, the ``public_address`` setter)."""
        if name.startswith("__") or name == "core":
            raise AttributeError(name)
        return getattr(self.core, name)

    @property
    def is_connected(self) -> bool:
        return self.transport is not None

    @property
    def public_address(self) -> NetworkAddress | None:
        """Our address as the registrar saw it (RFC 3581), or None."""
        return self.core.public_address

    @public_address.setter
    def public_address(self, value: NetworkAddress | None) -> None:
        self.core.public_address = value

    # -- Twisted DatagramProtocol ----------------------------------------------------------

    def startProtocol(self) -> None:
        """The socket is bound: tell the core our sent-by, then start the hooks."""
        host = self.transport.getHost()
        address = host.host
        if address in _WILDCARDS:
            address = routable_address(self.peer[0] if self.peer else "192.0.2.1")
        text = f"[{address}]" if ":" in address else address
        self.core.connection_made(NetworkAddress.parse(f"{text}:{host.port}"), False)
        handle = getattr(self.transport, "getHandle", None)
        if handle is not None:
            with contextlib.suppress(OSError):
                handle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        log.info("SIP over UDP on {host}:{port}", host=address, port=host.port)
        for hook in (self.registration, self.keepalive):
            if hook is not None:
                hook.connection_made(self)

    def stopProtocol(self) -> None:
        """The socket is closed: fail pending transactions, stop the hooks."""
        self.transport = None
        streams, self._streams = self._streams, {}
        for leg in streams.values():
            if leg.transport is not None:
                leg.transport.loseConnection()
        self.core.connection_lost()
        for hook in (self.keepalive, self.registration):
            if hook is not None:
                hook.connection_lost(self, None)
        self._end.fire()

    def on_registered(self) -> None:
        """Called each time the registrar accepts this flow's binding; see
        :meth:`SessionInitiationProtocol.on_registered`.  The base does nothing."""

    def when_disconnected(self) -> Deferred[None]:
        """A Deferred firing with None once the socket is closed (at once if it is)."""
        return self._end.wait()

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.stopListening()

    def flow_failed(self) -> None:
        """The keep-alive says the flow to the registrar failed: register again on it
        (RFC 5626 §4.4.2 / §4.5; over UDP the socket itself stays)."""
        if self.registration is not None and self.transport is not None:
            self.registration.connection_lost(self, None)
            self.registration.connection_made(self)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """One datagram from *addr*: bound it, parse it, stamp the Via, feed the core."""
        source = (str(addr[0]), int(addr[1]))
        if len(data) > MAX_DATAGRAM:
            self.dropped += 1
            log.info("dropped a {n}-octet datagram from {host} (over 65,535, RFC 3261 §18.3)",
                     n=len(data), host=source[0])
            return
        if is_stun(data):
            if self.keepalive is not None and hasattr(self.keepalive, "stun_received"):
                self.keepalive.stun_received(data, source)
            return
        if not data.strip(b"\r\n"):
            return  # a CRLF keep-alive (RFC 5626 §3.5.1 style): nothing to answer over UDP
        if self.trace:
            log.info("received from {peer}:\n{text}", peer=source,
                     text=redact(data).decode("utf-8", "replace"))
        try:
            message = Message.parse(data)
            if isinstance(message, Request):
                stamp_via(message, source)
        except SIPParseError as exc:
            # §18.3: a request with a Content-Length beyond the datagram (or any unparseable
            # request) gets 400 when it can be answered; a response is dropped.
            if not self.core.receive_unparseable(data, exc.status_code or 400, source):
                self.dropped += 1
                log.info("dropped unparseable datagram from {host}: {error}",
                         host=source[0], error=exc)
            return
        if (
            isinstance(message, Request)
            and message.method != "ACK"
            and self.core.transaction_count >= self.max_transactions
            and self.core.transactions.match_request(message) is None
        ):
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warn("dropping new requests: {n} transactions live (max_transactions)",
                         n=self.core.transaction_count)
            return
        if (
            isinstance(message, Response)
            and self.keepalive is not None
            and message.cseq[1] == "REGISTER"
            and 200 <= message.status_code < 300
            and hasattr(self.keepalive, "registered")
        ):
            self.keepalive.registered(message)
        self.core.receive(message, source)

    # -- sending ---------------------------------------------------------------------------

    def _write(self, message: Request | Response, destination: Any) -> None:
        """Send what the core hands out (see the module docstring for where it goes)."""
        if self.transport is None:
            return
        try:
            if isinstance(message, Response):
                try:
                    target = response_target(message, destination)
                except SIPParseError:
                    if destination is None:
                        raise
                    # The answer to an unparseable request: back to its source (§18.2.2).
                    target = (str(destination[0]), int(destination[1]))
            elif destination is not None:
                target = (str(destination[0]), int(destination[1]))
            elif self.peer is not None:
                target = self.peer
            else:
                target = request_target(message)
        except (SIPParseError, ValueError) as exc:
            log.warn("cannot send {message!r} over UDP: {error}", message=message, error=exc)
            return
        data = bytes(message)
        if (
            isinstance(message, Request)
            and (len(data) > MTU_LIMIT or message.branch in self._stream_branches)
            and self._send_over_stream(message, data, target)
        ):
            return
        if self.trace:
            log.info("sending to {peer}:\n{text}", peer=target,
                     text=redact(data).decode("utf-8", "replace"))
        self.write_to(data, target)

    def _send_over_stream(self, message: Request, data: bytes, target: Address) -> bool:
        """RFC 3261 §18.1.1: send a large request over TCP to *target*; True when it was
        sent (or, as a retransmission of one sent over TCP, needs no sending), False when
        it goes over UDP after all."""
        branch = message.branch or ""
        if branch in self._stream_branches:
            sent = self._stream_branches[branch]
            if sent is None:
                return False  # TCP failed for this transaction: it stays on UDP
            destination, method = sent
            if method == message.method:
                return True  # a retransmission: TCP already delivers the first copy
            target = destination  # its CANCEL or ACK: same connection (§9.1, §17.1.1.3)
        elif len(data) <= MTU_LIMIT or not branch:
            return False
        if not _is_ip(target[0]):
            self._warn_udp(message, data, target, "its destination is a host name")
            return False
        leg = self._streams.get(target)
        if leg is None:
            until = self._no_stream_until.get(target, 0.0)
            if until > self._clock.seconds():
                self._warn_udp(message, data, target, "TCP to it failed a moment ago")
                return False
            if len(self._streams) >= MAX_STREAMS:
                self._warn_udp(message, data, target, "too many TCP connections are open")
                return False
            leg = _StreamLeg(self, target, self._clock)
            self._streams[target] = leg
            self.stream_connector(target, leg).addErrback(self._stream_failed, leg)
        if branch not in self._stream_branches:
            while len(self._stream_branches) >= MAX_STREAM_BRANCHES:
                del self._stream_branches[next(iter(self._stream_branches))]
            self._stream_branches[branch] = (target, message.method)
        if self.trace:
            log.info("sending to {peer} over TCP:\n{text}", peer=target,
                     text=redact(data).decode("utf-8", "replace"))
        leg.send(over_stream(data), data, branch)
        return True

    def _warn_udp(self, message: Request, data: bytes, target: Address, why: str) -> None:
        log.warn(
            "{method} of {n} octets to {host}:{port} sent over UDP: {why} (RFC 3261 §18.1.1 "
            "wants requests over 1300 octets on TCP)",
            method=message.method, n=len(data), host=target[0], port=target[1], why=why,
        )

    def _stream_failed(self, failure: Failure, leg: _StreamLeg) -> None:
        """The TCP connection could not be made: §18.1.1 says send over UDP after all."""
        if self._streams.get(leg.target) is leg:
            del self._streams[leg.target]
        now = self._clock.seconds()
        self._no_stream_until = {t: end for t, end in self._no_stream_until.items() if end > now}
        if len(self._no_stream_until) < MAX_STREAM_BRANCHES:
            self._no_stream_until[leg.target] = now + STREAM_RETRY_AFTER
        pending, leg.pending = leg.pending, []
        for _, datagram, branch in pending:
            if branch in self._stream_branches:
                self._stream_branches[branch] = None
            log.warn(
                "TCP to {host}:{port} failed ({why}): the {n}-octet request goes over UDP "
                "(RFC 3261 §18.1.1)",
                host=leg.target[0], port=leg.target[1], why=failure.getErrorMessage(),
                n=len(datagram),
            )
            self.write_to(datagram, leg.target)

    def _stream_closed(self, leg: _StreamLeg) -> None:
        """A TCP connection of §18.1.1 closed: the next large request opens a new one."""
        if self._streams.get(leg.target) is leg:
            del self._streams[leg.target]

    def write_to(self, data: bytes, target: Address) -> None:
        """Send *data* to *target*; a host name is resolved first (the reactor's resolver)."""
        host, port = target
        if _is_ip(host):
            if self.transport is not None:
                try:
                    self.transport.write(data, (host.strip("[]"), port))
                except (OSError, MessageLengthError) as exc:
                    # One unreachable or oversized send must not take down what called it
                    # (a transaction timer, the core): the transaction's own timers decide.
                    log.warn("UDP send to {host}:{port} failed: {error}", host=host, port=port,
                             error=exc)
            return
        resolve = self._resolve
        if resolve is None:
            resolve = self.core.reactor.resolve  # type: ignore[attr-defined]
        d = resolve(host)
        d.addCallback(lambda ip: self.write_to(data, (ip, port)) if _is_ip(ip) else None)
        d.addErrback(lambda f: log.warn("cannot resolve {host}: {error}", host=host,
                                        error=f.getErrorMessage()))


class DatagramKeepalive:
    """RFC 5626 §4.4.2 STUN keep-alive for a UDP flow to its registrar.

    Every ``interval`` seconds (80-100 % of it, randomised; the registrar's
    ``Flow-Timer`` wins through :meth:`set_interval`) a STUN Binding request goes to the
    protocol's ``peer``.  An unanswered request (``answer_timeout`` seconds) fails the
    flow -- :meth:`SIPDatagramProtocol.flow_failed` registers again -- only when the
    registrar signalled outbound (``Require: outbound`` in its REGISTER 2xx, RFC 5626
    §4.2.1) or already answered a STUN request on this flow; otherwise the requests keep
    the NAT binding open and the silence is logged once.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        interval: float = 30.0,
        *,
        answer_timeout: float = 10.0,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("keepalive interval must be positive")
        self.clock: IReactorTime = reactor
        self.interval = float(interval)
        self.answer_timeout = answer_timeout
        self._jitter = jitter if jitter is not None else lambda: random.uniform(0.8, 1.0)
        self.protocol: Any = None
        self.outbound = False
        self.answered = False
        self.requests_sent = 0
        self._silence_logged = False
        self._mode_logged: bool | None = None
        self._next: IDelayedCall | None = None
        self._stun: StunClient | None = None
        self._pending: Deferred[Any] | None = None

    @property
    def running(self) -> bool:
        return self._next is not None or self._pending is not None

    def connection_made(self, protocol: Any) -> None:
        """Start keeping *protocol*'s flow alive."""
        self.stop()
        self.protocol = protocol
        self.outbound = self.answered = False
        self._stun = StunClient(
            lambda data, addr: protocol.write_to(data, addr),
            self.clock,
            rto=0.5,
            timeout=self.answer_timeout,
        )
        self._schedule()

    def connection_lost(self, protocol: Any = None, reason: object = None) -> None:
        if protocol is None or protocol is self.protocol:
            self.stop()
            self.protocol = None

    def stop(self) -> None:
        """Cancel the next request and any pending one; idempotent."""
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        if self._stun is not None:
            self._stun.cancel_all()

    def set_interval(self, seconds: float) -> None:
        """The registrar's ``Flow-Timer`` (RFC 5626 §4.4.2) becomes the interval."""
        if seconds <= 0:
            return
        self.interval = float(seconds)
        if self._next is not None:
            self._next.cancel()
            self._schedule()

    def registered(self, response: Response) -> None:
        """A REGISTER 2xx on this flow: does the registrar do outbound (RFC 5626 §4.2.1)?"""
        tags = {tag.strip().lower() for tag in response.headers.getlist("Require")}
        outbound = "outbound" in tags
        if outbound != self.outbound or self._mode_logged is None:
            log.info(
                "UDP flow keep-alive: STUN every {interval:g} s; {mode}",
                interval=self.interval,
                mode="an unanswered one fails the flow (registrar signalled outbound)"
                if outbound
                else "for the NAT binding only (registrar did not signal outbound)",
            )
            self._mode_logged = outbound
        self.outbound = outbound

    def stun_received(self, data: bytes, source: Address) -> None:
        """A STUN datagram on the SIP socket: an answer to one of our requests, maybe."""
        if self._stun is not None:
            self._stun.datagram_received(data, source)

    def _schedule(self) -> None:
        fraction = min(1.0, max(0.8, self._jitter()))
        self._next = self.clock.callLater(self.interval * fraction, self._send)

    def _send(self) -> None:
        self._next = None
        peer = getattr(self.protocol, "peer", None)
        if peer is None or self._stun is None:
            return
        self.requests_sent += 1
        d = self._stun.request(peer)
        self._pending = d
        d.addCallbacks(self._answered, self._unanswered)

    def _answered(self, _: object) -> None:
        self._pending = None
        self.answered = True
        self._schedule()

    def _unanswered(self, failure: Failure) -> None:
        self._pending = None
        if not failure.check(StunError):
            return  # cancelled by stop()
        if not failure.check(StunTimeout):
            self._answered(None)  # an error response still proves the flow alive
            return
        if self.outbound or self.answered:
            log.warn("UDP flow to {peer} failed: no STUN keep-alive answer (RFC 5626 §4.4.2); "
                     "registering again", peer=getattr(self.protocol, "peer", None))
            self.answered = False
            if self.protocol is not None:
                self.protocol.flow_failed()
        elif not self._silence_logged:
            self._silence_logged = True
            log.info("registrar does not answer STUN keep-alives and did not signal outbound: "
                     "sending them for the NAT binding only")
        if self.protocol is not None:
            self._schedule()
