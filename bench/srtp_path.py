"""In-process micro-benchmark of an echo call's per-packet path, plain RTP vs SRTP.

Usage::

    python bench/srtp_path.py [--calls 1] [--packets 5000] [--rounds 15] [--profile]

Each measured packet goes through the real code the service runs for an echo
call: ``RealtimeTransportProtocol.datagramReceived`` (SRTP unprotect, header
parse, symmetric-RTP latch check, statistics, jitter buffer, G.711 decode) into
:class:`~voiptwisted.media.session.EchoSession`, then one pacer tick
(``RealtimeTransportProtocol.tick``: the echoed frame is G.711 encoded, the
header packed, SRTP protected and handed to the socket).  There is no network:
the transport's socket is a :class:`_SinkSocket` whose ``sendto`` only counts,
and the inbound datagrams (protected by a peer :class:`SRTPContext` for SRTP) are
built before timing.  With ``--calls N`` each datagram goes to the next of N
calls in turn, as in the service, so per-call state is as cold as it is there.
Without the reactor and the kernel the plain path is much cheaper than in the
service, so the srtp/plain ratio here is far larger than the service's; what
carries over is the absolute µs SRTP adds per packet.

Four modes run in interleaved rounds (the order rotates every round), timed
with CPU time (``time.process_time``) because the machine is shared:

``plain``     the echo calls with RTP/AVP;
``srtp-null`` every SRTP branch of our code, with a pass-through stand-in for the
              crypto: ``srtp-null - plain`` is what our SRTP code costs;
``srtp``      the echo calls with AES_CM_128_HMAC_SHA1_80;
``libsrtp``   pylibsrtp alone: one ``unprotect`` and one ``protect`` of a 172-byte
              RTP packet per echoed packet, N session pairs in turn: the floor.

The table gives the median of the rounds (µs per packet), srtp/plain, and how
srtp - plain splits into our code and pylibsrtp.  ``--profile`` prints a
cProfile of one plain and one SRTP round (top functions by own time) instead.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import task

from voiptwisted.codecs import CODECS
from voiptwisted.media.session import EchoSession
from voiptwisted.rtp.protocol import RealtimeTransportProtocol
from voiptwisted.rtp.srtp import SRTPContext
from voiptwisted.sdp import CryptoAttribute

PEER = ("127.0.0.1", 40000)
MODES = ("plain", "srtp-null", "srtp", "libsrtp")
_HEADER = struct.Struct("!BBHII")
#: PCMA payload type (RFC 3551 §6).
PCMA = 8


class _SinkSocket(socket.socket):
    """A real (never bound) UDP socket object whose ``sendto`` only counts: the
    protocol writes to ``transport.socket.sendto`` directly, as it does in service."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent = 0
        self.first: bytes = b""
        self.last: bytes = b""

    def sendto(self, data: Any, address: Any) -> int:  # type: ignore[override]
        if not self.sent:
            self.first = bytes(data)
        self.sent += 1
        self.last = data
        return len(data)


class _SinkTransport:
    """Stands in for the call's ``udp.Port`` (RTP and RTCP): holds the sink socket."""

    def __init__(self) -> None:
        self.socket = _SinkSocket()
        self.rtcp = 0

    def write(self, data: bytes, addr: Any) -> None:
        self.rtcp += 1

    def stopListening(self) -> None:
        self.socket.close()


class _NoPacer:
    """The benchmark calls ``tick(1)`` itself, once per received packet."""

    def add(self, callback: Callable[[int], object]) -> None:
        """Nothing to schedule."""

    def remove(self, callback: Callable[[int], object]) -> None:
        """Nothing to cancel."""


class _Dialog:
    call_id = "bench-srtp-path"

    def bye(self) -> None:
        """The echo session never hangs up here."""


#: 160 octets of varying PCMA per packet, so decode and encode do real table look-ups.
_PAYLOADS = [bytes((index + i * 7) & 0xFF for i in range(160)) for index in range(256)]


def _payload(index: int) -> bytes:
    return _PAYLOADS[index & 0xFF]


def _rtp(seq: int, ssrc: int = 0x1234ABCD) -> bytes:
    return _HEADER.pack(0x80, PCMA, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + _payload(seq)


class _PassThroughSRTP:
    """Stands in for :class:`SRTPContext` with no cryptography at all: an ``srtp-null``
    call runs every SRTP branch of the protocol, so it measures what our SRTP code costs
    around pylibsrtp."""

    errors: tuple[type[Exception], ...] = ()
    auth_failures = 0
    replays = 0

    def protect(self, packet: bytes) -> bytes:
        """The packet as it is (pylibsrtp, too, takes and returns bytes)."""
        return packet

    unprotect = unprotect_or_raise = protect_rtcp = unprotect_rtcp = protect

    def count_failure(self, exc: Exception) -> None:
        """Never called: nothing fails."""


class EchoCall:
    """One echo call's RTP protocol wired to a sink socket, and its inbound datagrams.

    *mode* is ``plain`` (RTP/AVP), ``srtp`` (AES_CM_128_HMAC_SHA1_80) or ``srtp-null``.
    """

    def __init__(self, mode: str, total: int, clock: task.Clock) -> None:
        ours, theirs = CryptoAttribute.generate(), CryptoAttribute.generate()
        self.peer = SRTPContext(theirs, ours) if mode == "srtp" else None
        context: Any = {"plain": None, "srtp-null": _PassThroughSRTP(),
                        "srtp": SRTPContext(ours, theirs) if mode == "srtp" else None}[mode]
        self.rtp = RealtimeTransportProtocol(reactor=clock, pacer=_NoPacer())
        self.transport = _SinkTransport()
        self.rtp.transport = self.transport
        self.rtp.ports = (self.transport, self.transport)
        self.rtp.configure(remote=PEER, codec=CODECS["PCMA"], payload_type=PCMA,
                           telephone_event_pt=101, srtp=context)
        session = EchoSession(_Dialog())
        session.attach(self.rtp, clock)
        self.rtp.start(session)
        packets = [_rtp(seq) for seq in range(total)]
        if self.peer is not None:
            packets = [self.peer.protect(p) for p in packets]
        self.packets = packets

    def check(self) -> int:
        """Every datagram given was accepted and echoed (SRTP-protected when secure);
        returns how many."""
        stats = self.rtp.refresh_stats()
        sink = self.transport.socket
        problems = (stats.auth_failures, stats.replays, stats.malformed, stats.rejected_source)
        if stats.packets_received != sink.sent or any(problems):
            raise SystemExit(f"echo path broken: received {stats.packets_received}, sent"
                             f" {sink.sent}; drops {problems}")
        if self.peer is not None:
            # The first one: after a sequence wrap the peer could not guess the rollover.
            if len(sink.last) != 12 + 160 + 10 or self.peer.unprotect(sink.first) is None:
                raise SystemExit("echoed SRTP packet does not verify at the peer")
        elif sink.sent and len(sink.last) != 12 + 160:
            raise SystemExit("echoed RTP packet has the wrong length")
        return sink.sent


def _round_robin(per_call: list[list[Any]], total: int) -> list[Any]:
    """One entry of each call in turn (as packets arrive in service), *total* in all."""
    return [entries[index] for index in range(len(per_call[0])) for entries in per_call][:total]


class EchoCalls:
    """*calls* echo calls of one mode; each datagram goes to the next call in turn,
    followed by that call's pacer tick, which echoes it."""

    def __init__(self, mode: str, calls: int, total: int) -> None:
        self.clock = task.Clock()
        per_call = -(-total // calls)
        self.calls = [EchoCall(mode, per_call, self.clock) for _ in range(calls)]
        self.schedule = _round_robin(
            [[(call.rtp.datagramReceived, call.rtp.tick, data) for data in call.packets]
             for call in self.calls], total)
        self.step = 0.02 / calls
        self.position = 0

    def run(self, count: int) -> None:
        """Receive the next *count* datagrams, each followed by its call's tick."""
        clock, step = self.clock, self.step
        entries = self.schedule[self.position : self.position + count]
        self.position += count
        for receive, tick, data in entries:
            receive(data, PEER)
            tick(1)
            clock.rightNow += step  # the media clock moves on; nothing is scheduled on it

    def check(self) -> None:
        """Every call echoed every datagram it was given."""
        echoed = sum(call.check() for call in self.calls)
        if echoed != self.position:
            raise SystemExit(f"echoed {echoed} of {self.position} datagrams")


class LibsrtpOnly:
    """pylibsrtp's own cost per echoed packet: unprotect one in, protect one out, with
    a receive and a send session per call, the calls taken in turn."""

    def __init__(self, calls: int, total: int) -> None:
        import pylibsrtp

        policy = pylibsrtp.Policy
        profile = policy.SRTP_PROFILE_AES128_CM_SHA1_80
        per_call = -(-total // calls)
        entries = []
        for _ in range(calls):
            ours, theirs = os.urandom(30), os.urandom(30)
            peer = pylibsrtp.Session(policy(key=theirs, ssrc_type=policy.SSRC_ANY_OUTBOUND,
                                            srtp_profile=profile))
            rx = pylibsrtp.Session(policy(key=theirs, ssrc_type=policy.SSRC_ANY_INBOUND,
                                          srtp_profile=profile))
            tx = pylibsrtp.Session(policy(key=ours, ssrc_type=policy.SSRC_ANY_OUTBOUND,
                                          srtp_profile=profile))
            entries.append([(rx.unprotect, peer.protect(_rtp(seq)), tx.protect,
                             _rtp(seq, ssrc=0x5678)) for seq in range(per_call)])
        self.schedule = _round_robin(entries, total)
        self.position = 0

    def run(self, count: int) -> None:
        entries = self.schedule[self.position : self.position + count]
        self.position += count
        for unprotect, data, protect, reply in entries:
            unprotect(data)
            protect(reply)

    def check(self) -> None:
        """Nothing to check: pylibsrtp raises on any failure."""


def _time(runner: Any, count: int) -> float:
    start = time.process_time()
    runner.run(count)
    return (time.process_time() - start) / count


def _runners(calls: int, total: int, modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    return {mode: LibsrtpOnly(calls, total) if mode == "libsrtp"
            else EchoCalls(mode, calls, total) for mode in modes}


def measure(packets: int, rounds: int, calls: int) -> dict[str, list[float]]:
    """µs per packet of each mode for every round (one warm-up round is not counted)."""
    runners = _runners(calls, packets * (rounds + 1))
    for runner in runners.values():
        runner.run(packets)
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for index in range(rounds):
        shift = index % len(MODES)
        for mode in MODES[shift:] + MODES[:shift]:
            results[mode].append(1e6 * _time(runners[mode], packets))
    for runner in runners.values():
        runner.check()
    return results


def profile(packets: int, calls: int) -> str:
    """cProfile of one plain and one SRTP round, top functions by own time."""
    runners = _runners(calls, 2 * packets, ("plain", "srtp"))
    out = io.StringIO()
    for mode, runner in runners.items():
        runner.run(packets)
        profiler = cProfile.Profile()
        profiler.enable()
        runner.run(packets)
        profiler.disable()
        out.write(f"\n### {mode}: {packets} packets, {calls} call(s)\n")
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
    return out.getvalue()


def render(results: dict[str, list[float]], packets: int, rounds: int, calls: int) -> str:
    """The Markdown result table (medians of the rounds) and the derived figures."""
    med = {mode: statistics.median(values) for mode, values in results.items()}
    spread = {mode: (min(values), max(values)) for mode, values in results.items()}
    added = med["srtp"] - med["plain"]
    lines = [
        f"{calls} call(s), {rounds} interleaved rounds of {packets} packets;"
        " median (min-max) µs per echoed packet:",
        "",
        "| mode | µs/packet | min-max |",
        "|---|---:|---:|",
    ]
    for mode in MODES:
        low, high = spread[mode]
        lines.append(f"| {mode} | {med[mode]:.2f} | {low:.2f}-{high:.2f} |")
    lines += [
        "",
        f"- srtp / plain: {med['srtp'] / med['plain']:.2f}x",
        f"- SRTP adds {added:.2f} µs per packet; pylibsrtp alone (the floor)"
        f" {med['libsrtp']:.2f} µs; beyond the floor {added - med['libsrtp']:.2f} µs",
        f"- of which our SRTP code with pass-through crypto (srtp-null - plain)"
        f" {med['srtp-null'] - med['plain']:.2f} µs, and pylibsrtp inside the call"
        f" (srtp - srtp-null) {med['srtp'] - med['srtp-null']:.2f} µs",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--packets", type=int, default=5000, help="packets per round")
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds per mode")
    parser.add_argument("--calls", type=int, default=1,
                        help="echo calls (and pylibsrtp session pairs) taken in turn")
    parser.add_argument("--profile", action="store_true", help="cProfile instead of timing")
    args = parser.parse_args(argv)
    if args.packets < 1 or args.rounds < 1 or args.calls < 1:
        parser.error("--packets, --rounds and --calls must be positive")
    if args.profile:
        print(profile(args.packets, args.calls))
        return 0
    print(render(measure(args.packets, args.rounds, args.calls), args.packets, args.rounds,
                 args.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
