"""CPU per packet and memory per call of the media path, in process, as ratios to a bare echo.

Run ``python bench/media_profile.py`` (defaults: 200 calls, 250 packets each).  N
G.711 echo calls (``RealtimeTransportProtocol`` + ``EchoSession``, sockets replaced by
counting fakes) get every packet through ``datagramReceived`` and send through the
shared ``Pacer`` ticked on a ``task.Clock``: the whole per-packet path without the
kernel.  In the same process a bare function that parses the RTP header and writes the
packet back gives the floor; the machine is shared, so ratios are what to compare.

Options: ``--srtp`` (AES_CM_128_HMAC_SHA1_80 both ways), ``--profile`` (top 15 by
cumulative time), ``--memory`` (tracemalloc bytes per configured, running call),
``--compare DIR`` (also run the tree at DIR, e.g. a ``git worktree`` of main, in a
child process, and print both, alternating runs so load changes hit both alike).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import struct
import subprocess
import sys
import time
import tracemalloc
from typing import Any

_HEADER = struct.Struct("!BBHII")


class _Port:
    """Stands in for a udp.Port: counts writes."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: Any, addr: Any) -> None:
        self.n += 1

    def stopListening(self) -> None:
        pass


class _Dialog:
    call_id = "bench"

    def bye(self) -> None:
        pass


def _calls(n: int, srtp: bool) -> tuple[Any, list[Any], Any]:
    from twisted.internet import task

    from voiptwisted.codecs import CODECS
    from voiptwisted.media.pacer import Pacer
    from voiptwisted.media.session import EchoSession
    from voiptwisted.rtp.protocol import RealtimeTransportProtocol

    peer = None
    clock = task.Clock()
    pacer = Pacer(clock)
    calls = []
    if srtp:
        from voiptwisted.rtp.srtp import SRTPContext
        from voiptwisted.sdp import CryptoAttribute

        ours, theirs = CryptoAttribute.generate(), CryptoAttribute.generate()
        peer = SRTPContext(theirs, ours)
    for i in range(n):
        proto = RealtimeTransportProtocol(reactor=clock, pacer=pacer)
        rtp, rtcp = _Port(), _Port()
        proto.transport = rtp
        proto.ports = (rtp, rtcp)
        proto.configure(
            remote=("192.0.2.1", 4000 + 2 * i), codec=CODECS["PCMA"], payload_type=8,
            telephone_event_pt=101, srtp=SRTPContext(ours, theirs) if srtp else None,
        )
        session = EchoSession(_Dialog())
        session.attach(proto, clock)
        proto.start(session)
        calls.append(proto)
    return clock, calls, peer


def _packets(count: int, peer: Any) -> list[bytes]:
    import numpy as np

    from voiptwisted.codecs.g711 import alaw_encode

    payload = alaw_encode((np.sin(np.arange(160) / 5) * 8000).astype(np.int16))
    out = []
    for k in range(count):
        packet = _HEADER.pack(0x80, 8, k, k * 160, 0xABCD) + payload
        out.append(peer.protect(packet) if peer is not None else packet)
    return out


def measure(n: int, count: int, srtp: bool, profile: bool) -> dict[str, Any]:
    """µs of CPU per packet (one in + one out) of the stack and of the bare echo."""
    clock, calls, peer = _calls(n, srtp)
    packets = _packets(count, peer)
    addrs = [("192.0.2.1", 4000 + 2 * i) for i in range(n)]
    pairs = list(zip(calls, addrs, strict=True))

    def stack() -> None:
        for k in range(count):
            data = packets[k]
            for proto, addr in pairs:
                proto.datagramReceived(data, addr)
            clock.advance(0.02)

    port = _Port()

    def bare(data: bytes, addr: Any) -> None:
        _b0, _b1, _seq, _ts, _ssrc = _HEADER.unpack_from(data)
        port.write(data, addr)

    def floor() -> None:
        for k in range(count):
            data = packets[k]
            for _proto, addr in pairs:
                bare(data, addr)

    t0 = time.process_time()
    floor()
    floor_s = time.process_time() - t0
    profiler = cProfile.Profile() if profile else None
    t0 = time.process_time()
    if profiler is not None:
        profiler.enable()
    stack()
    if profiler is not None:
        profiler.disable()
    stack_s = time.process_time() - t0
    sent = sum(proto.stats.packets_sent for proto in calls)
    received = sum(proto.stats.packets_received for proto in calls)
    total = n * count
    result = {
        "calls": n, "received": received, "sent": sent,
        "us_per_packet": stack_s / total * 1e6, "floor_us": floor_s / total * 1e6,
    }
    result["ratio"] = result["us_per_packet"] / result["floor_us"]
    if profiler is not None:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.strip_dirs().sort_stats("cumulative").print_stats(15)
        result["profile"] = text.getvalue()
    return result


def memory_per_call(n: int) -> float:
    """tracemalloc bytes per running call (protocol, session, coders, buffers), after
    a second of audio each (so every lazily built object exists)."""
    import numpy  # noqa: F401  (imported before the measurement: not a per-call cost)

    warm_clock, warm, _ = _calls(1, False)  # imports and class-level caches: not per call
    for proto in warm:
        proto.datagramReceived(_packets(1, None)[0], ("192.0.2.1", 4000))
    warm_clock.advance(0.02)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    clock, calls, peer = _calls(n, False)
    packets = _packets(50, peer)
    for k in range(50):
        for i, proto in enumerate(calls):
            proto.datagramReceived(packets[k], ("192.0.2.1", 4000 + 2 * i))
        clock.advance(0.02)
    del packets
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calls", type=int, nargs="?", default=200)
    parser.add_argument("packets", type=int, nargs="?", default=250)
    parser.add_argument("--srtp", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", metavar="DIR", help="also run the tree at DIR")
    args = parser.parse_args()
    if args.compare:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        child = [a for a in sys.argv[1:] if a != "--compare" and a != args.compare]
        figures: dict[str, list[float]] = {"base": [], "new": []}
        for _ in range(args.repeat):
            for label, root in (("base", os.path.abspath(args.compare)), ("new", here)):
                env = dict(os.environ, PYTHONPATH=root)
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), *child, "--repeat", "1"],
                    env=env, capture_output=True, text=True, timeout=900, check=True,
                ).stdout
                print(f"[{label}] {out.strip()}")
                figures[label].extend(
                    float(word.split("=")[1]) for word in out.split() if word.startswith("us/")
                )
        base, new = statistics.median(figures["base"]), statistics.median(figures["new"])
        print(f"median us/packet: base {base:.2f}, new {new:.2f}, new/base {new / base:.2f}")
        return
    for _ in range(args.repeat):
        result = measure(args.calls, args.packets, args.srtp, args.profile)
        print(
            f"{'srtp' if args.srtp else 'plain'} N={result['calls']}"
            f" in={result['received']} out={result['sent']}"
            f" us/packet={result['us_per_packet']:.2f} floor={result['floor_us']:.2f}"
            f" ratio={result['ratio']:.2f}"
        )
        if args.profile:
            print(result["profile"])
    if args.memory:
        print(f"memory per call: {memory_per_call(args.calls):.0f} B (tracemalloc)")


if __name__ == "__main__":
    main()
