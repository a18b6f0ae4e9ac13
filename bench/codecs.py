# CPU cost of one 20 ms frame through each codec: `python bench/codecs.py`.
# Speech-like test audio (tests/codecs/signals.py) is encoded frame by frame with one encoder
# and decoded with one decoder, as one direction of one call does; each figure is the best of
# --repeat runs of --frames frames, in µs of process CPU time (and wall time) per frame.
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.codecs.signals import frames, speech
from voiptwisted.codecs.g711 import alaw_decode, alaw_encode
from voiptwisted.codecs.g722 import G722Decoder, G722Encoder
from voiptwisted.codecs.opus import OpusDecoder, OpusEncoder, OpusSettings


def measure(work: Callable[[int], object], count: int, repeat: int) -> tuple[float, float]:
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(count):
            work(i)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_cpu / count * 1e6, best_wall / count * 1e6


def rows() -> list[tuple[str, str, Callable[[int], object]]]:
    narrow = frames(speech(8000, seconds=2.0, top=3400), 160)
    wide = frames(speech(16000, seconds=2.0), 320)
    full = frames(speech(48000, seconds=2.0), 960)
    pcma = [alaw_encode(f) for f in narrow]
    g722_encoder, g722_decoder = G722Encoder(), G722Decoder()
    g722 = [G722Encoder().encode(f) for f in wide]
    table: list[tuple[str, str, Callable[[int], object]]] = [
        ("PCMA", "encode", lambda i: alaw_encode(narrow[i % len(narrow)])),
        ("PCMA", "decode", lambda i: alaw_decode(pcma[i % len(pcma)])),
        ("G.722", "encode", lambda i: g722_encoder.encode(wide[i % len(wide)])),
        ("G.722", "decode", lambda i: g722_decoder.decode(g722[i % len(g722)])),
    ]
    for complexity in (5, 10):
        encoder = OpusEncoder(OpusSettings(complexity=complexity))
        packets = [OpusEncoder(OpusSettings(complexity=complexity)).encode(f) for f in full]
        decoder = OpusDecoder()
        name = f"Opus c={complexity}"
        table.append((name, "encode", lambda i, e=encoder: e.encode(full[i % len(full)])))
        table.append((name, "decode", lambda i, d=decoder, p=packets: d.decode(p[i % len(p)])))
    fec_decoder = OpusDecoder()
    fec_packets = [OpusEncoder().encode(f) for f in full]
    table.append(
        ("Opus", "decode_fec", lambda i: fec_decoder.decode_fec(fec_packets[i % len(full)]))
    )
    table.append(("Opus", "conceal", lambda i: fec_decoder.conceal()))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description="µs per 20 ms frame for each codec")
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'codec':<12} {'step':<11} {'CPU µs/frame':>13} {'wall µs/frame':>14}")
    for codec, step, work in rows():
        cpu, wall = measure(work, args.frames, args.repeat)
        print(f"{codec:<12} {step:<11} {cpu:>13.1f} {wall:>14.1f}")
    print(f"(best of {args.repeat} runs of {args.frames} frames; numpy {np.__version__})")


if __name__ == "__main__":
    main()
