"""In-process micro-benchmark of one echo call's per-packet path, plain RTP vs SRTP.

Usage::

    python bench/srtp_path.py [--packets 5000] [--rounds 15] [--profile]

Each measured packet goes through the real code the service runs for an echo
call: ``RealtimeTransportProtocol.datagramReceived`` (SRTP unprotect, header
parse, symmetric-RTP latch check, statistics, jitter buffer, G.711 decode) into
:class:`~voiptwisted.media.session.EchoSession`, then one pacer tick
(``RealtimeTransportProtocol.tick``: the echoed frame is G.711 encoded, the
header packed, SRTP protected and handed to the socket).  There is no network:
the transport's socket is a :class:`_SinkSocket` whose ``sendto`` only counts,
and the inbound datagrams (protected by a peer :class:`SRTPContext` for SRTP) are
built before timing.  Without the reactor and the kernel the plain path is much
cheaper than in the service, so the srtp/plain ratio here is far larger than
the service's; what carries over is the absolute µs SRTP adds per packet.

Three modes run in interleaved rounds (the order rotates every round), timed
with CPU time (``time.process_time``) because the machine is shared:

``plain``  the echo call with RTP/AVP;
``srtp``   the same call with AES_CM_128_HMAC_SHA1_80;
``libsrtp`` pylibsrtp alone: one ``unprotect`` and one ``protect`` of a 172-byte
           RTP packet per echoed packet, the floor of what SRTP must add.

The table gives the median of the rounds (µs per packet), srtp/plain, and how
much of srtp - plain is not pylibsrtp.  ``--profile`` prints a cProfile of one
plain and one SRTP round (top functions by own time) instead of the table.
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

from voiptwisted.media.session import EchoSession
from voiptwisted.rtp.protocol import RealtimeTransportProtocol
from voiptwisted.rtp.srtp import CryptoAttribute, SRTPContext
from voiptwisted.sdp.negotiation import CODECS

PEER = ("127.0.0.1", 40000)
MODES = ("plain", "srtp", "libsrtp")
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


def _payload(index: int) -> bytes:
    """160 octets of varying PCMA, so decode and encode do real table look-ups."""
    return bytes((index + i * 7) & 0xFF for i in range(160))


def _rtp(seq: int, ssrc: int = 0x1234ABCD) -> bytes:
    return _HEADER.pack(0x80, PCMA, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + _payload(seq)


class EchoCall:
    """One echo call's RTP protocol wired to a sink socket, and its inbound datagrams."""

    def __init__(self, secure: bool, total: int) -> None:
        ours, theirs = CryptoAttribute.generate(), CryptoAttribute.generate()
        self.peer = SRTPContext(theirs, ours) if secure else None
        self.clock = task.Clock()
        self.rtp = RealtimeTransportProtocol(clock=self.clock, pacer=_NoPacer())
        self.transport = _SinkTransport()
        self.rtp.transport = self.transport
        self.rtp.ports = (self.transport, self.transport)
        self.rtp.configure(
            remote=PEER, codec=CODECS["PCMA"], payload_type=PCMA, telephone_event_pt=101,
            srtp=SRTPContext(ours, theirs) if secure else None,
        )
        session = EchoSession(_Dialog())
        session.attach(self.rtp, self.clock)
        self.rtp.start(session)
        packets = [_rtp(seq) for seq in range(total)]
        if self.peer is not None:
            packets = [self.peer.protect(p) for p in packets]
        self.packets = packets
        self.position = 0

    def run(self, count: int) -> None:
        """Receive *count* datagrams, each followed by the pacer tick that echoes it."""
        receive, tick, clock = self.rtp.datagramReceived, self.rtp.tick, self.clock
        packets = self.packets[self.position : self.position + count]
        self.position += count
        for data in packets:
            receive(data, PEER)
            tick(1)
            clock.rightNow += 0.02  # the media clock moves on; nothing is scheduled on it

    def check(self, expected: int) -> None:
        """Every datagram was accepted and echoed (and SRTP-protected when secure)."""
        stats = self.rtp.refresh_stats()
        sent = self.transport.socket.sent
        problems = (stats.auth_failures, stats.replays, stats.malformed, stats.rejected_source)
        if stats.packets_received != expected or sent != expected or any(problems):
            raise SystemExit(f"echo path broken: received {stats.packets_received}, sent {sent}"
                             f" of {expected}; drops {problems}")
        sink = self.transport.socket
        if self.peer is not None:
            # The first one: after a sequence wrap the peer could not guess the rollover.
            if len(sink.last) != 12 + 160 + 10 or self.peer.unprotect(sink.first) is None:
                raise SystemExit("echoed SRTP packet does not verify at the peer")
        elif len(sink.last) != 12 + 160:
            raise SystemExit("echoed RTP packet has the wrong length")


class LibsrtpOnly:
    """pylibsrtp's own cost per echoed packet: unprotect one in, protect one out."""

    def __init__(self, total: int) -> None:
        import pylibsrtp

        policy = pylibsrtp.Policy
        profile = policy.SRTP_PROFILE_AES128_CM_SHA1_80
        ours, theirs = os.urandom(30), os.urandom(30)
        peer = pylibsrtp.Session(policy(key=theirs, ssrc_type=policy.SSRC_ANY_OUTBOUND,
                                        srtp_profile=profile))
        self.rx = pylibsrtp.Session(policy(key=theirs, ssrc_type=policy.SSRC_ANY_INBOUND,
                                           srtp_profile=profile))
        self.tx = pylibsrtp.Session(policy(key=ours, ssrc_type=policy.SSRC_ANY_OUTBOUND,
                                           srtp_profile=profile))
        self.inbound = [peer.protect(_rtp(seq)) for seq in range(total)]
        self.outbound = [_rtp(seq, ssrc=0x5678) for seq in range(total)]
        self.position = 0

    def run(self, count: int) -> None:
        unprotect, protect = self.rx.unprotect, self.tx.protect
        start = self.position
        self.position += count
        for data, reply in zip(self.inbound[start : start + count],
                               self.outbound[start : start + count], strict=True):
            unprotect(data)
            protect(reply)

    def check(self, expected: int) -> None:
        """Nothing to check: pylibsrtp raises on any failure."""


def _time(runner: Any, count: int) -> float:
    start = time.process_time()
    runner.run(count)
    return (time.process_time() - start) / count


def _runners(total: int) -> dict[str, Any]:
    return {"plain": EchoCall(False, total), "srtp": EchoCall(True, total),
            "libsrtp": LibsrtpOnly(total)}


def measure(packets: int, rounds: int) -> dict[str, list[float]]:
    """µs per packet of each mode for every round (one warm-up round is not counted)."""
    runners = _runners(packets * (rounds + 1))
    for runner in runners.values():
        runner.run(packets)
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for index in range(rounds):
        shift = index % len(MODES)
        for mode in MODES[shift:] + MODES[:shift]:
            results[mode].append(1e6 * _time(runners[mode], packets))
    for runner in runners.values():
        runner.check(packets * (rounds + 1))
    return results


def profile(packets: int) -> str:
    """cProfile of one plain and one SRTP round, top functions by own time."""
    runners = _runners(2 * packets)
    out = io.StringIO()
    for mode in ("plain", "srtp"):
        runner = runners[mode]
        runner.run(packets)
        profiler = cProfile.Profile()
        profiler.enable()
        runner.run(packets)
        profiler.disable()
        out.write(f"\n### {mode}: {packets} packets\n")
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
    return out.getvalue()


def render(results: dict[str, list[float]], packets: int, rounds: int) -> str:
    """The Markdown result table (medians of the rounds) and the derived figures."""
    med = {mode: statistics.median(values) for mode, values in results.items()}
    spread = {mode: (min(values), max(values)) for mode, values in results.items()}
    added = med["srtp"] - med["plain"]
    lines = [
        f"{rounds} interleaved rounds of {packets} packets;"
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
        f"- SRTP adds {added:.2f} µs per packet; pylibsrtp alone (floor) {med['libsrtp']:.2f} µs;"
        f" ours beyond the floor {added - med['libsrtp']:.2f} µs",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--packets", type=int, default=5000, help="packets per round")
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds per mode")
    parser.add_argument("--profile", action="store_true", help="cProfile instead of timing")
    args = parser.parse_args(argv)
    if args.profile:
        print(profile(args.packets))
        return 0
    print(render(measure(args.packets, args.rounds), args.packets, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
