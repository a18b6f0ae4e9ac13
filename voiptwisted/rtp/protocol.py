"""Per-call RTP/RTCP over UDP: ``RealtimeTransportProtocol`` (RFC 3550, RFC 4961, RFC 5761).

One UDP socket per call, taken from a port range (even port for RTP, the
next odd one for RTCP unless ``a=rtcp-mux``).  Outbound audio is paced by
the process-wide :class:`~voiptwisted.media.pacer.Pacer`; the RTP timestamp
is derived from the tick count so it stays continuous across silence and
late ticks.  Media is sent to the SDP address until the peer's source is
validated, then to that source (symmetric RTP, RFC 4961); which sources are
accepted is :class:`~voiptwisted.rtp.latch.SourceLatch`'s decision, and RTCP is
taken only from the validated source's address.  Each call's port pair is
picked at random from the range, so an attacker cannot predict the next call's.

numpy is imported by the first ``RealtimeTransportProtocol`` (a call), not when this
module is: ``MediaConfig`` needs :class:`PortAllocator` when a service starts, and an
idle registered service should not carry numpy's memory (issue 6).
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import select
import socket
import struct
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import udp
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorFDSet, IReactorTime, IReadDescriptor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from voiptwisted.rtp.dtmf import DTMFReceiver, DTMFSender
from voiptwisted.rtp.latch import PROBATION, RELATCH_AFTER, SourceLatch
from voiptwisted.rtp.packet import (
    ReceiverReport,
    RTPPacket,
    RTPParseError,
    RTPStats,
    SenderReport,
    SourceDescription,
    build_rtcp,
    ntp_timestamp,
    parse_rtcp,
)
from voiptwisted.rtp.stun import StunClient, is_stun

if TYPE_CHECKING:
    import numpy as np

    from voiptwisted.rtp.srtp import SRTPContext
else:
    #: numpy, bound by :func:`_load_numpy` when the first call's protocol is created.
    np = None

__all__ = [
    "MediaStats",
    "PortAllocator",
    "ReadMultiplexer",
    "RealtimeTransportProtocol",
    "read_multiplexer",
]

_HEADER = struct.Struct("!BBHII")
#: Receive buffer asked for on every RTP socket (see notes/performance.md).
RECEIVE_BUFFER = 1 << 20
#: RTCP report interval in 20 ms ticks (RFC 3550 §6.2: 5 s minimum for small sessions).
RTCP_TICKS = 250
#: At most this many ready sockets are drained per wake-up of the shared RTP reader: under
#: load the reactor gets back (and runs the pacer's timer) within about a millisecond,
#: instead of after every one of hundreds of ready sockets.
MAX_READY_PER_READ = 32
#: At most this many frames are sent in one tick after a stall (the rest are skipped).
MAX_CATCH_UP = 3
#: Bound on queued DTMF ticks (about 100 digits).
MAX_DTMF_TICKS = 1200
#: Largest payload the preallocated send buffer holds (6 x 20 ms of G.711).
_MAX_TX_PAYLOAD = 960
#: At most this many 20 ms frames are concealed for one gap (200 ms): a longer gap is an
#: outage, and a peer jumping its sequence numbers must not buy itself a burst of work.
MAX_CONCEAL_FRAMES = 10
_INT16: Any = None
#: voiptwisted.media.jitter.Lost, bound with the first protocol (media imports this module).
_LOST: Any = None
#: Port picks come from the OS's CSPRNG: the next call's port must not be guessable.
_RANDOM = secrets.SystemRandom()
_SENDING = frozenset(("sendrecv", "sendonly"))
_RECEIVING = frozenset(("sendrecv", "recvonly"))


def _load_numpy() -> None:
    """Import numpy once, into this module's globals, so the per-packet code pays nothing."""
    global np, _INT16
    if np is None:
        import numpy

        _INT16 = numpy.dtype(numpy.int16)
        np = numpy


@dataclass(slots=True)
class MediaStats:
    """Per-call RTP statistics (RFC 3550 §6.4 figures plus drop counters)."""

    packets_sent: int = 0
    octets_sent: int = 0
    packets_received: int = 0
    octets_received: int = 0
    lost: int = 0
    jitter_ms: float = 0.0
    late: int = 0
    duplicates: int = 0
    malformed: int = 0
    unknown_payload: int = 0
    auth_failures: int = 0
    replays: int = 0
    rejected_source: int = 0
    rejected_rtcp: int = 0
    dtmf_received: int = 0
    dtmf_sent: int = 0
    skipped_ticks: int = 0
    #: Packets the socket refused (a full send buffer under overload, an unreachable
    #: network): lost on our side, so counted rather than vanishing.
    send_failures: int = 0
    rtcp_sent: int = 0
    rtcp_received: int = 0
    remote_fraction_lost: int = 0
    remote_jitter: int = 0


def _address(addr: Any) -> tuple[str, int]:
    return (addr[0], addr[1])


def _is_ip(host: str) -> bool:
    """True for an IP literal: only those are written to the socket directly (no DNS)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _RTCPProtocol(DatagramProtocol):
    """The RTCP socket (port+1) of a call; hands datagrams to its RTP protocol."""

    noisy = False  # one per call: "Starting/Stopping protocol" would drown the call's lines

    def __init__(self, owner: RealtimeTransportProtocol) -> None:
        self.owner = owner

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.owner.rtcp_received(data, _address(addr))


@implementer(IReadDescriptor)
class ReadMultiplexer:
    """All RTP/RTCP sockets of a process behind ONE reactor reader (notes/performance.md).

    With one socket per call the reactor otherwise dispatches every ready socket
    separately (per-event bookkeeping, log context), which is most of the cost per
    packet at telephony rates.  Here the reactor watches a single epoll descriptor;
    when it is readable every ready socket is drained in one pass through its own
    ``udp.Port.doRead``, so a packet is still handled as soon as it arrives (no added
    latency) and the Port keeps writing, closing and reporting errors as usual.
    """

    log = Logger()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._epoll = select.epoll()
        self._ports: dict[int, Any] = {}
        self._fds: dict[Any, int] = {}

    def __len__(self) -> int:
        return len(self._ports)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def logPrefix(self) -> str:
        return "RTP"

    def add(self, port: Any) -> None:
        """Take *port*'s socket off the reactor's own read set and watch it here."""
        fd = port.fileno()
        port.stopReading()
        self._epoll.register(fd, select.EPOLLIN)
        self._ports[fd] = port
        self._fds[port] = fd
        self.reactor.addReader(self)

    def remove(self, port: Any) -> None:
        """Stop watching *port* (call before it closes); idempotent."""
        fd = self._fds.pop(port, None)
        if fd is not None:
            self._ports.pop(fd, None)
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
        if not self._ports:
            self.reactor.removeReader(self)

    def doRead(self) -> None:
        """Drain up to :data:`MAX_READY_PER_READ` ready sockets (each Port reads until EAGAIN,
        bounded); sockets still ready are level-triggered, so the reactor calls again at once
        after its timers, and epoll hands them out in turn."""
        ports = self._ports
        for fd, _events in self._epoll.poll(0, MAX_READY_PER_READ):
            port = ports.get(fd)
            if port is None:
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)
                continue
            try:
                port.doRead()
            except Exception:
                self.log.failure("RTP socket read failed on {port!r}", port=port)

    def connectionLost(self, reason: Any) -> None:
        """The reactor dropped us (shutdown or test cleanup); re-added by the next ``add``."""


_multiplexers: weakref.WeakKeyDictionary[Any, ReadMultiplexer] = weakref.WeakKeyDictionary()


def read_multiplexer(reactor: Any) -> ReadMultiplexer | None:
    """The shared :class:`ReadMultiplexer` of *reactor*, or None where it cannot work
    (no epoll on this platform, or a reactor that does not take file descriptors)."""
    if not hasattr(select, "epoll") or not IReactorFDSet.providedBy(reactor):
        return None
    mux = _multiplexers.get(reactor)
    if mux is None:
        mux = _multiplexers[reactor] = ReadMultiplexer(reactor)
    return mux


class PortAllocator:
    """Hands out even RTP ports (and port+1 for RTCP) picked at random from a range.

    A random pair per call (not the next one after the last call's) keeps the
    port of a call unpredictable to anyone who saw another call's SDP (issue 14
    finding 10).  When a pair is busy another random pair is tried, at most
    ``attempts`` times in all.
    With ``multiplex`` (default) the sockets are read through the reactor's shared
    :class:`ReadMultiplexer` when it has one.
    """

    def __init__(
        self, port_range: tuple[int, int] = (10000, 20000), attempts: int = 64,
        multiplex: bool = True,
    ) -> None:
        low, high = port_range
        low += low % 2
        if not 1024 <= low < high <= 65535 or high - low < 2:
            raise ValueError(f"bad RTP port range {port_range}")
        self.low = low
        self.high = high
        self.attempts = attempts
        self.multiplex = multiplex
        #: How many even ports (pairs) the range holds.
        self.pairs = (high - low) // 2

    def candidates(self) -> Iterator[int]:
        """Up to ``attempts`` distinct even ports of the range, in random order (every
        pair when the range holds no more than that), drawn one at a time: the first is
        nearly always free, so a call costs one draw from the system's CSPRNG, not
        ``attempts`` of them (that was 167 µs of each call's set-up)."""
        if self.pairs <= self.attempts:
            for pick in _RANDOM.sample(range(self.pairs), self.pairs):
                yield self.low + 2 * pick
            return
        tried: set[int] = set()
        while len(tried) < self.attempts:
            pick = _RANDOM.randrange(self.pairs)
            if pick not in tried:
                tried.add(pick)
                yield self.low + 2 * pick

    def bind(self, reactor: Any, protocol: RealtimeTransportProtocol, interface: str) -> int:
        """Listen on a random free even port (+1 for RTCP) on *interface*; return the port."""
        port = self.low
        for port in self.candidates():
            try:
                rtcp = reactor.listenUDP(port + 1, _RTCPProtocol(protocol), interface=interface)
            except CannotListenError:
                continue
            try:
                rtp = reactor.listenUDP(port, protocol, interface=interface)
            except CannotListenError:
                rtcp.stopListening()
                continue
            for listening in (rtp, rtcp):
                sock = getattr(listening, "socket", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            protocol.ports = (rtp, rtcp)
            protocol.local_port = port
            mux = read_multiplexer(reactor) if self.multiplex else None
            if mux is not None and all(isinstance(p, udp.Port) for p in (rtp, rtcp)):
                mux.add(rtp)
                mux.add(rtcp)
                protocol.multiplexer = mux
            return port
        raise CannotListenError(interface, port, f"no free RTP port after {self.attempts} tries")


class RealtimeTransportProtocol(DatagramProtocol):
    """RTP for one call: receive -> (SRTP) -> jitter buffer -> decode -> session, and back.

    Create, bind with :class:`PortAllocator`, :meth:`configure` once the SDP
    is negotiated, :meth:`start` with the session, :meth:`stop` at the end.
    """

    #: Slots, not a dict: ~60 attributes per call overflow CPython's shared-key instance
    #: dicts (a 2.5 KB table per call, issue 16).  Twisted's ``transport`` and
    #: ``numPorts`` are set per instance too.
    __slots__ = (
        "_carry", "_concealer", "_decode_table", "_decoder", "_dtmf_receiver", "_dtmf_sender",
        "_dtmf_start", "_dtmf_ticks", "_encode_table", "_encoder", "_failed", "_frame",
        "_jitter", "_last_frames", "_pending_frames", "_rates", "_receiving", "_remote_fmtp",
        "_remote_is_ip", "_rtcp_latched", "_running", "_rx_resampler", "_rx_stats", "_sending",
        "_sendto", "_sendto_transport", "_sequence", "_stopped", "_talking", "_tick",
        "_ts_base", "_ts_step", "_tx", "_tx_resampler", "_tx_slices", "clock", "cname", "codec",
        "deliver_dtmf_events", "direction", "frames_per_packet", "last_activity", "latch",
        "local_port", "multiplexer", "numPorts", "pacer", "payload_type", "ports", "remote",
        "rtcp_mux", "rtcp_remote", "session", "session_rate", "srtp", "ssrc", "stats",
        "stop_reason", "stun", "telephone_event_pt", "transport",
    )

    log = Logger()
    noisy = False  # one per call: "Starting/Stopping protocol" would drown the call's lines

    def __init__(
        self, *, reactor: IReactorTime, pacer: Any = None, stun_server: Any = None,
        probation: int = PROBATION, relatch_after: float = RELATCH_AFTER,
    ) -> None:
        """*reactor* times the stream (and runs the default pacer); *probation* and
        *relatch_after* tune source validation (:class:`SourceLatch`)."""
        global _LOST
        from voiptwisted.media.jitter import JitterBuffer, Lost

        _LOST = Lost
        _load_numpy()
        self.transport: Any = None
        self.numPorts = 0
        if pacer is None:
            from voiptwisted.media.pacer import default_pacer

            pacer = default_pacer(reactor)
        self.clock = reactor
        self.pacer = pacer
        self.ports: tuple[Any, ...] = ()
        #: The ReadMultiplexer reading our sockets, if any (set by PortAllocator.bind).
        self.multiplexer: ReadMultiplexer | None = None
        self.local_port = 0
        self.remote: tuple[str, int] | None = None
        self.rtcp_remote: tuple[str, int] | None = None
        self.rtcp_mux = False
        #: Source validation: which address RTP (and so RTCP) is accepted from.
        self.latch = SourceLatch(probation=probation, relatch_after=relatch_after)
        #: Clock time of the last accepted RTP or RTCP packet (or of start/configure):
        #: what an inactivity timeout measures (issue 17 item 2).
        self.last_activity = 0.0
        #: Why the stream stopped (see :meth:`stop`); None while it runs.
        self.stop_reason: str | None = None
        self._rtcp_latched = False
        self.codec: Any = None
        #: This call's own coders, made by the codec's factories (voiptwisted.codecs).
        self._encoder: Any = None
        self._decoder: Any = None
        self.payload_type = -1
        self.telephone_event_pt: int | None = None
        self.direction = "sendrecv"
        self.frames_per_packet = 1
        self.srtp: SRTPContext | None = None
        self.session: Any = None
        self.stats = MediaStats()
        self.ssrc = secrets.randbits(32)
        #: RTCP CNAME (RFC 3550 §6.5.1): random per call, so it reveals nothing (RFC 7022).
        self.cname = secrets.token_hex(8)
        self._sequence = secrets.randbits(16)
        self._ts_base = secrets.randbits(32)
        self._tick = 0
        self._talking = False
        self._pending_frames: list[np.ndarray] = []
        # Send buffer reused for every packet: header packed in place, G.711 coded in place.
        self._tx: bytearray | None = None
        self._tx_slices: dict[int, tuple[np.ndarray, memoryview]] = {}
        self._encode_table: np.ndarray | None = None
        self._decode_table: np.ndarray | None = None
        self._receiving = True
        self._sending = True
        self._sendto: Any = None
        self._sendto_transport: Any = None
        self._remote_is_ip = True
        #: Received samples short of a whole frame, waiting for the next packet (or None).
        self._carry: np.ndarray | None = None
        self._dtmf_sender = DTMFSender()
        self._dtmf_ticks: list[Any] = []
        self._dtmf_start = 0
        self._dtmf_receiver = DTMFReceiver()
        #: Whether RFC 4733 key presses reach the session; off once the call's keys come
        #: as SIP INFO (``CallMedia.signalled_dtmf``), so one press never counts twice.
        self.deliver_dtmf_events = True
        self._jitter = JitterBuffer(report_loss=True)
        #: Samples per 20 ms at the codec's audio rate, RTP timestamp units per 20 ms.
        self._frame = 160
        self._ts_step = 160
        #: The session's rate, and the converters between it and the codec's (None: same).
        self.session_rate = 8000
        self._rx_resampler: Any = None
        self._rates = (8000, 8000)
        self._tx_resampler: Any = None
        self._concealer: Any = None
        self._last_frames = 1
        self._remote_fmtp: str | None = None
        self._rx_stats: RTPStats | None = None
        self._running = False
        self._stopped = False
        self._failed = False
        self.stun = StunClient(self._write_raw, reactor) if stun_server is not None else None

    def __repr__(self) -> str:
        return f"<RealtimeTransportProtocol port={self.local_port} remote={self.remote}>"

    @property
    def latched(self) -> bool:
        """True once the peer's source address is validated (we send there)."""
        return self.latch.latched

    # configuration -------------------------------------------------------------------
    def configure(
        self,
        *,
        remote: tuple[str, int] | None,
        codec: Any,
        payload_type: int,
        telephone_event_pt: int | None = None,
        direction: str = "sendrecv",
        rtcp_mux: bool = False,
        rtcp_remote: tuple[str, int] | None = None,
        ptime: int = 20,
        srtp: SRTPContext | None = None,
        remote_fmtp: str | None = None,
    ) -> None:
        """Apply the negotiated media parameters (RFC 3264); may be called again on re-INVITE.

        *codec* is a :class:`voiptwisted.codecs.Codec` (anything with ``clock_rate``,
        ``encoder()`` and ``decoder()``; ``sample_rate`` if its audio rate differs from the
        clock rate, as G.722's); *remote_fmtp* is the peer's ``a=fmtp`` for it, which an
        Opus encoder follows (RFC 7587 §6.1).  Frames are 20 ms at the codec's audio rate
        and the RTP timestamp advances ``clock_rate / 50`` per frame (160 for G.722's 320
        samples, RFC 3551 §4.5.2); telephone-events use the same clock (RFC 4733 §2.1).
        A codec of another rate changes the session's rate (:meth:`_bind_session`).

        A new *remote* restarts source validation from it; the address we are latched to
        (passed back by a session refresh) keeps the latch.  A negotiation counts as
        activity for the inactivity timeout.
        """
        self.remote = remote
        self.latch.expect(remote)
        if not self.latch.latched:
            self._rtcp_latched = False
        self.last_activity = self.clock.seconds()
        self.rtcp_mux = rtcp_mux
        if rtcp_remote is None and remote is not None:
            rtcp_remote = remote if rtcp_mux else (remote[0], remote[1] + 1)
        self.rtcp_remote = rtcp_remote
        changed = codec is not self.codec
        if changed or remote_fmtp != self._remote_fmtp:
            # A codec with state between packets needs a coder per call and direction;
            # a re-INVITE that keeps the codec keeps the coders (and their state).
            if getattr(codec, "peer_fmtp_aware", False):
                self._encoder = codec.encoder(remote_fmtp)
            else:
                self._encoder = codec.encoder()
            if changed:
                self._decoder = codec.decoder()
        self._remote_fmtp = remote_fmtp
        self.codec = codec
        self.payload_type = payload_type
        self.telephone_event_pt = telephone_event_pt
        self.direction = direction
        most = int(getattr(codec, "max_frames_per_packet", 6))
        self.frames_per_packet = max(1, min(6, most, ptime // 20))
        if changed:
            self._set_rates(codec)
        self.srtp = srtp
        self._encode_table = getattr(self._encoder, "encode_table", None)
        self._decode_table = getattr(self._decoder, "decode_table", None)
        self._receiving = direction in _RECEIVING
        self._sending = direction in _SENDING
        self._remote_is_ip = remote is None or _is_ip(remote[0])
        if self._rx_stats is not None:
            self._rx_stats.clock_rate = codec.clock_rate

    def _set_rates(self, codec: Any) -> None:
        """Frame sizes, timestamp step, DTMF clock, jitter window and concealment of *codec*."""
        from voiptwisted.codecs.plc import RepeatFadeConcealer

        clock_rate = int(codec.clock_rate)
        audio_rate = int(getattr(codec, "sample_rate", clock_rate))
        self._frame = max(1, audio_rate // 50)
        self._ts_step = max(1, clock_rate // 50)
        self._dtmf_sender = DTMFSender(clock_rate=clock_rate)
        self._jitter.set_clock_rate(clock_rate)
        self._carry = None
        self._pending_frames = []
        self._last_frames = 1
        # Opus conceals with libopus itself (and FEC); the others repeat and fade.
        self._concealer = (
            None if hasattr(self._decoder, "conceal") else RepeatFadeConcealer(self._frame)
        )
        if self.session is not None:
            self._bind_session(self.session)

    def _bind_session(self, session: Any) -> None:
        """Agree on the session's rate for the codec's (``ISession``: ``use_call_rate`` or a
        fixed ``sample_rate``) and resample between them when they differ."""
        call_rate = self._frame * 50
        use = getattr(session, "use_call_rate", None)
        try:
            rate = int(use(call_rate)) if use is not None else int(
                getattr(session, "sample_rate", call_rate)
            )
            if (call_rate, rate) != self._rates:
                self._rx_resampler = self._tx_resampler = None
                if rate != call_rate:
                    # PyAV (libswresample) is imported only by a call that resamples.
                    from voiptwisted.media.resample import StreamResampler

                    self._rx_resampler = StreamResampler(call_rate, rate)
                    self._tx_resampler = StreamResampler(rate, call_rate)
                self._rates = (call_rate, rate)
        except Exception:
            # A session rate we cannot serve (not a whole number of samples per 20 ms, ...)
            # is the session's error: it ends the call like any other.
            self._session_failed()
            rate = call_rate
        self.session_rate = rate

    # lifecycle -----------------------------------------------------------------------
    def start(self, session: Any) -> None:
        """Attach *session* and join the pacer; session.start() is called here."""
        if self._stopped:
            raise RuntimeError("RTP stream already stopped")
        self.session = session
        if self.codec is not None:
            self._bind_session(session)
        self._running = True
        self.last_activity = self.clock.seconds()
        self.pacer.add(self.tick)
        self._call_session(session.start)

    def stop(self, reason: str = "ended") -> None:
        """Leave the pacer, stop the session, release both ports. Idempotent.

        *reason* says why (``"ended"``: the call ended by BYE, CANCEL, shutdown...;
        ``"rtp-timeout"``/``"hold-timeout"``: no RTP or RTCP for the inactivity timeout);
        it is set as the session's ``stop_reason`` before ``session.stop()`` runs
        (``ISession.stop``).
        """
        if self._stopped:
            return
        self._stopped = True
        self.stop_reason = reason
        self._running = False
        self.pacer.remove(self.tick)
        if self.stun is not None:
            self.stun.cancel_all()
        session, self.session = self.session, None
        if session is not None:
            with contextlib.suppress(AttributeError, TypeError):
                session.stop_reason = reason
            self._call_session(session.stop)
        ports, self.ports = self.ports, ()
        mux, self.multiplexer = self.multiplexer, None
        for port in ports:
            if mux is not None:
                mux.remove(port)
            port.stopListening()

    def send_dtmf(self, digits: str) -> None:
        """Queue RFC 4733 events for *digits*; sent on the pacer ticks that follow."""
        if self.telephone_event_pt is None:
            self.log.warn("DTMF {digits!r} not sent: peer did not offer telephone-event",
                          digits=len(digits))
            return
        if len(self._dtmf_ticks) + 12 * len(digits) > MAX_DTMF_TICKS:
            self.log.warn("DTMF queue full: {n} digits dropped", n=len(digits))
            return
        self._dtmf_ticks.extend(self._dtmf_sender.packets(digits))
        self.stats.dtmf_sent += len(digits)

    @property
    def clock_rate(self) -> int:
        return self.codec.clock_rate if self.codec is not None else 8000

    def refresh_stats(self) -> MediaStats:
        """Update loss/jitter figures from the receiver state and return :attr:`stats`."""
        if self._rx_stats is not None:
            self.stats.lost = self._rx_stats.lost
            self.stats.jitter_ms = 1000.0 * self._rx_stats.jitter / self.clock_rate
        self.stats.late = self._jitter.late
        self.stats.duplicates = self._jitter.duplicates
        if self.srtp is not None:
            self.stats.auth_failures = self.srtp.auth_failures
            self.stats.replays = self.srtp.replays
        return self.stats

    # sending -------------------------------------------------------------------------
    def _write_raw(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.ports:
            self.transport.write(data, addr)

    def tick(self, ticks: int) -> None:
        """Pacer callback: send this tick's frame (or DTMF), RTCP every ~5 s."""
        if not self._running:
            return
        if ticks == 1:
            self._one_tick()
            tick = self._tick = self._tick + 1
            if not tick % RTCP_TICKS:
                self._send_rtcp()
            return
        if ticks > MAX_CATCH_UP:
            self.stats.skipped_ticks += ticks - MAX_CATCH_UP
            self._tick += ticks - MAX_CATCH_UP
            self._talking = False
            ticks = MAX_CATCH_UP
        for _ in range(ticks):
            self._one_tick()
            self._tick += 1
            if self._tick % RTCP_TICKS == 0:
                self._send_rtcp()

    def _one_tick(self) -> None:
        session = self.session
        frame = None
        if session is not None:
            try:
                frame = session.next_frame()
            except Exception:
                self._session_failed()
                return
        if self._dtmf_ticks:
            entry = self._dtmf_ticks.pop(0)
            if entry is not None and entry[0]:
                self._dtmf_start = self._tick
            if entry is not None and self.telephone_event_pt is not None:
                marker, _offset, payload = entry
                timestamp = self._ts_base + self._dtmf_start * self._ts_step
                self._send(self.telephone_event_pt, marker, timestamp, payload)
            self._talking = False
            return
        if frame is None:
            if self._pending_frames:
                self._pending_frames.clear()
            self._talking = False
            return
        if self._tx_resampler is not None:
            frame = self._tx_resampler.convert(frame)
        if self.frames_per_packet == 1:
            samples = frame
            first_tick = self._tick
        else:
            self._pending_frames.append(frame)
            if len(self._pending_frames) < self.frames_per_packet:
                return
            frames = self._pending_frames
            first_tick = self._tick - len(frames) + 1
            samples = np.concatenate(frames)
            self._pending_frames = []
        marker = not self._talking
        self._talking = True
        timestamp = self._ts_base + first_tick * self._ts_step
        table = self._encode_table
        if (
            table is not None
            and isinstance(samples, np.ndarray)
            and (samples.dtype is _INT16 or samples.dtype == _INT16)
            and samples.ndim == 1
            and 0 < len(samples) <= _MAX_TX_PAYLOAD
        ):
            self._send_coded(table, samples, marker, timestamp)
            return
        size = self._frame
        expected = size * (len(samples) // size or 1)
        if len(samples) != expected:
            # A session that sends another frame size than its rate's (e.g. 160 samples into
            # a 48 kHz call): coders take whole frames, so pad or cut rather than fail.
            samples = np.resize(np.asarray(samples, np.int16), expected)
        if len(samples) == size:
            payload = self._encoder.encode(samples)
        else:
            # Several frames in one packet (a=ptime): a sample-wise coder (G.722) codes them
            # back to back; an Opus stream never gets here (one frame per packet).
            payload = b"".join(
                self._encoder.encode(samples[start : start + size])
                for start in range(0, len(samples), size)
            )
        self._send(self.payload_type, marker, timestamp, payload)

    def _send_coded(
        self, table: np.ndarray, samples: np.ndarray, marker: bool, timestamp: int
    ) -> None:
        """Send one audio packet built in the reusable buffer (no per-packet allocation
        beyond what the socket call needs): header packed in place, payload coded in place.
        With SRTP the built packet is protected as it is (one copy: pylibsrtp takes bytes)."""
        remote = self.remote
        if remote is None or not self._sending or not self.ports:
            return
        size = len(samples)
        slices = self._tx_slices.get(size)
        if slices is None:
            slices = self._tx_slices[size] = self._tx_slice(size)
        out, packet = slices
        # Indexed by the int16 sample itself: "wrap" maps -32768..-1 to 32768..65535, the
        # table's uint16 bit-pattern order, and (unlike "raise") writes *out* unbuffered.
        table.take(samples, out=out, mode="wrap")
        seq = self._sequence = (self._sequence + 1) & 0xFFFF
        tx = self._tx
        _HEADER.pack_into(
            tx, 0, 0x80, self.payload_type | (0x80 if marker else 0), seq,
            timestamp & 0xFFFFFFFF, self.ssrc,
        )
        srtp = self.srtp
        if srtp is not None:
            packet = srtp.protect(bytes(packet))
        sendto = self._sendto
        if sendto is not None and self.transport is self._sendto_transport and self._remote_is_ip:
            # The usual case, what _write does first, without its call and checks.
            try:
                sendto(packet, remote)
            except Exception as exc:
                self.stats.send_failures += 1
                self.log.debug("RTP send to {remote} failed: {exc}", remote=remote, exc=exc)
                return
        elif not self._write(packet):
            return
        stats = self.stats
        stats.packets_sent += 1
        stats.octets_sent += size

    def _tx_slice(self, size: int) -> tuple[np.ndarray, memoryview]:
        """The payload array and packet view of the send buffer for *size* samples; the
        buffer is made (or grown) here, so a call that never sends G.711 holds none, and
        one sending 20 ms packets holds 172 bytes rather than room for 120 ms."""
        if self._tx is None or len(self._tx) < 12 + size:
            self._tx = bytearray(12 + size)
            self._tx_slices = {}
        view = memoryview(self._tx)
        return (np.frombuffer(self._tx, np.uint8, size, 12), view[: 12 + size])

    def _write(self, packet: Any) -> bool:
        """Write one RTP datagram to the remote; straight to the socket when there is one
        (Twisted's ``Port.write`` re-validates the address on every call)."""
        transport = self.transport
        if transport is not self._sendto_transport:
            self._sendto_transport = transport
            sock = getattr(transport, "socket", None)
            self._sendto = sock.sendto if isinstance(sock, socket.socket) else None
        try:
            if self._sendto is not None and self._remote_is_ip:
                self._sendto(packet, self.remote)
            else:
                transport.write(bytes(packet), self.remote)
        except Exception as exc:
            self.stats.send_failures += 1
            self.log.debug("RTP send to {remote} failed: {exc}", remote=self.remote, exc=exc)
            return False
        return True

    def _send(self, payload_type: int, marker: bool, timestamp: int, payload: bytes) -> None:
        if not self._sending or self.remote is None or not self.ports:
            return
        seq = self._sequence = (self._sequence + 1) & 0xFFFF
        packet = _HEADER.pack(
            0x80, payload_type | (0x80 if marker else 0), seq, timestamp & 0xFFFFFFFF, self.ssrc
        ) + payload
        if self.srtp is not None:
            packet = self.srtp.protect(packet)
        if not self._write(packet):
            return
        self.stats.packets_sent += 1
        self.stats.octets_sent += len(payload)

    def _send_rtcp(self) -> None:
        if self.rtcp_remote is None or not self.ports:
            return
        now = self.clock.seconds()
        blocks = []
        if self._rx_stats is not None:
            blocks.append(self._rx_stats.report_block(now))
        if self.stats.packets_sent:
            msw, lsw = ntp_timestamp(now)
            report: Any = SenderReport(
                self.ssrc, msw, lsw, (self._ts_base + self._tick * self._ts_step) & 0xFFFFFFFF,
                self.stats.packets_sent, self.stats.octets_sent, blocks,
            )
        else:
            report = ReceiverReport(self.ssrc, blocks)
        data = build_rtcp(report, SourceDescription({self.ssrc: self.cname}))
        if self.srtp is not None:
            data = self.srtp.protect_rtcp(data)
        port = self.ports[0] if self.rtcp_mux else self.ports[1]
        try:
            port.write(data, self.rtcp_remote)
        except Exception as exc:
            self.log.debug("RTCP send failed: {exc}", exc=exc)
            return
        self.stats.rtcp_sent += 1

    # receiving -----------------------------------------------------------------------
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """Handle one datagram on the RTP port; never raises (bad input is counted, dropped)."""
        if len(data) < 12 or not data[0] & 0x80:
            if self.stun is not None and is_stun(data):
                self.stun.datagram_received(data, _address(addr))
            elif self.rtcp_mux and len(data) >= 8 and 192 <= data[1] <= 223:
                self.rtcp_received(data, _address(addr))
            else:
                self.stats.malformed += 1
            return
        if self.rtcp_mux and 192 <= data[1] <= 223:
            self.rtcp_received(data, _address(addr))
            return
        if self.codec is None or self._stopped:
            return
        srtp = self.srtp
        if srtp is not None:
            try:
                data = srtp.unprotect_or_raise(data)
            except srtp.errors as exc:
                srtp.count_failure(exc)
                return
        if data[0] == 0x80 and len(data) >= 12:
            # Common case, no CSRC/extension/padding: read the fixed header in place.
            _b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
            pt = b1 & 0x7F
            packet = None
            offset, end = 12, len(data)
        else:
            try:
                packet = RTPPacket.parse(data)
            except RTPParseError:
                self.stats.malformed += 1
                return
            pt, sequence, timestamp, ssrc = (
                packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc
            )
            offset, end = 0, len(packet.payload)
        if pt != self.payload_type and pt != self.telephone_event_pt:
            self.stats.unknown_payload += 1
            return
        if addr.__class__ is not tuple or len(addr) != 2:
            addr = _address(addr)
        now = self.clock.seconds()
        latch = self.latch
        if addr == latch.source:
            latch.last_seen = now
        elif not self._accept_source(addr, ssrc, sequence, now):
            self.stats.rejected_source += 1
            return
        self.last_activity = now
        stats = self.stats
        stats.packets_received += 1
        stats.octets_received += end - offset
        rx = self._rx_stats
        if rx is None or rx.ssrc != ssrc:
            rx = self._rx_stats = RTPStats(ssrc, self.clock_rate)
        rx.update(sequence, timestamp, now)
        session = self.session
        if session is None or not self._receiving:
            return
        if pt == self.telephone_event_pt:
            digit = self._dtmf_receiver.receive(
                timestamp, data[12:] if packet is None else packet.payload
            )
            if digit is not None:
                stats.dtmf_received += 1
                if self.deliver_dtmf_events:
                    self._call_session(session.dtmf_received, digit)
            return
        jitter = self._jitter
        if packet is None:
            if jitter.in_order(sequence, ssrc):
                # The usual packet: next in sequence, nothing buffered; played at once
                # without building a packet object (JitterBuffer.push's fast path).
                self._deliver(data, 12)
                return
            packet = RTPPacket(pt, sequence, timestamp, ssrc, data[12:], bool(b1 & 0x80))
        ready = jitter.push(packet)
        if len(ready) == 1 and ready[0].__class__ is not _LOST:
            self._deliver(ready[0].payload)
            return
        for index, item in enumerate(ready):
            if item.__class__ is _LOST:
                following = ready[index + 1] if index + 1 < len(ready) else None
                self._conceal(item.count, following)
            else:
                self._deliver(item.payload)

    def _accept_source(
        self, source: tuple[str, int], ssrc: int, sequence: int, now: float
    ) -> bool:
        """A packet from an address other than the latched one: :class:`SourceLatch` decides
        (RFC 3550 §8.2 source validation, RFC 4961 §4 symmetric RTP); a (re-)latch
        sends our RTP, and RTCP unless it has a source of its own, there."""
        latch = self.latch
        before = latch.source
        if not latch.accept(source, ssrc, sequence, now):
            return False
        if latch.source != before:
            if source != self.remote or before is not None:
                self.log.info("RTP latched to {source} (SDP said {sdp}, was {before})",
                              source=source, sdp=latch.expected, before=before)
            self.remote = source
            self._remote_is_ip = True
            if self.rtcp_mux:
                self.rtcp_remote = source
            elif not self._rtcp_latched or before is not None:
                self._rtcp_latched = False
                self.rtcp_remote = (source[0], source[1] + 1)
        return True

    def _deliver(self, payload: bytes, offset: int = 0) -> None:
        """Decode the audio at *offset* of *payload* (12: a whole RTP packet, read in place
        by a G.711 table) and hand it on; a whole 20 ms frame goes straight to the session."""
        table = self._decode_table
        try:
            if table is not None:
                samples = table.take(np.frombuffer(payload, np.uint8, -1, offset))
            else:
                samples = self._decoder.decode(payload[offset:] if offset else payload)
        except Exception:
            self.stats.malformed += 1
            return
        concealer = self._concealer
        if concealer is not None:
            concealer.good(samples)
        size = self._frame
        if len(samples) == size and self._carry is None:
            self._last_frames = 1
            if self._rx_resampler is None:
                try:
                    self.session.audio_received(samples)
                except Exception:
                    self._session_failed()
            else:
                self._to_session(samples)
            return
        self._last_frames = max(1, min(6, len(samples) // size))
        self._play(samples)

    def _conceal(self, count: int, following: Any) -> None:
        """Fill *count* lost packets with audio, so the session still hears one frame per 20
        ms: Opus rebuilds the last lost frame from the in-band FEC of the packet after it
        when that one is here (RFC 7587 §3.2, RFC 6716 §2.1.7) and runs its own PLC for the
        others; G.711 and G.722 repeat the last frame fading out (:mod:`..codecs.plc`).
        At most :data:`MAX_CONCEAL_FRAMES` frames are made for one gap."""
        frames = min(count * self._last_frames, MAX_CONCEAL_FRAMES)
        decoder, concealer = self._decoder, self._concealer
        out = []
        try:
            if concealer is not None:
                out = [concealer.conceal() for _ in range(frames)]
            else:
                fec = following is not None and following.__class__ is not _LOST
                for _ in range(frames - 1 if fec else frames):
                    out.append(decoder.conceal())
                if fec:
                    out.append(decoder.decode_fec(following.payload))
        except Exception:
            self.stats.malformed += 1
        for samples in out:
            self._play(samples)

    def _play(self, samples: Any) -> None:
        """Hand decoded audio to the session in 20 ms frames (at its rate)."""
        size = self._frame
        carry = self._carry
        if len(samples) == size and carry is None:
            self._to_session(samples)
            return
        data = samples if carry is None else np.concatenate((carry, samples))
        whole = len(data) - len(data) % size
        for start in range(0, whole, size):
            if self.session is None:
                return
            self._to_session(data[start : start + size])
        self._carry = data[whole:].copy() if whole < len(data) else None

    def _to_session(self, frame: Any) -> None:
        if self._rx_resampler is not None:
            frame = self._rx_resampler.convert(frame)
        self._call_session(self.session.audio_received, frame)

    def _rtcp_source_ok(self, source: tuple[str, int]) -> bool:
        """RTCP is taken only from the peer's validated RTP source (its SDP address before
        that): the same address with rtcp-mux (RFC 5761), the same IP otherwise, since
        RTCP's own port may be NATed differently.  Anyone else could redirect our reports."""
        trusted = self.latch.source or self.latch.expected
        if trusted is None:
            return False
        if self.rtcp_mux:
            return source == trusted
        return source[0] == trusted[0]

    def rtcp_received(self, data: bytes, source: tuple[str, int]) -> None:
        """Handle an RTCP datagram (port+1 or muxed): SR times for LSR, peer's loss report."""
        if self._stopped:
            return
        if not self._rtcp_source_ok(source):
            self.stats.rejected_rtcp += 1
            return
        if self.srtp is not None:
            data = self.srtp.unprotect_rtcp(data)
            if data is None:
                return
        try:
            items = parse_rtcp(data)
        except RTPParseError:
            self.stats.malformed += 1
            return
        self.stats.rtcp_received += 1
        now = self.clock.seconds()
        self.last_activity = now
        if not self.rtcp_mux:
            self.rtcp_remote = source
            self._rtcp_latched = True
        for item in items:
            rx = self._rx_stats
            if isinstance(item, SenderReport) and rx is not None and item.ssrc == rx.ssrc:
                rx.sender_report_received(item.ntp_msw, item.ntp_lsw, now)
            for block in getattr(item, "reports", ()):
                if block.ssrc == self.ssrc:
                    self.stats.remote_fraction_lost = block.fraction_lost
                    self.stats.remote_jitter = block.jitter

    # application errors --------------------------------------------------------------
    def _call_session(self, method: Callable[..., Any], *args: Any) -> None:
        try:
            method(*args)
        except Exception:
            self._session_failed()

    def _session_failed(self) -> None:
        """An ISession method raised: log it and end the call (interfaces.py contract)."""
        self.log.failure("session {session!r} raised; ending the call", session=self.session)
        if self._failed:
            return
        self._failed = True
        session = self.session
        if session is not None and not self._stopped:
            self.clock.callLater(0, self._hang_up, session)

    def _hang_up(self, session: Any) -> None:
        try:
            session.hang_up()
        except Exception:
            self.log.failure("hang_up after a session error failed")
