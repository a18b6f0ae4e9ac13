"""Parse cost per KiB of hostile inputs next to an ordinary INVITE (issue 14, Benchmark).

Run ``python bench/parse_adversarial.py``.  Every shape of ``tests/sip/hostile.py``
(long SP/HTAB runs with folds, a=crypto/inline: runs, VT/U+0085/U+2028 display names,
quotes, '<', ';' and ',' storms, a 64 KiB number, SDP r= lines) is grown to 8 KiB and
to 64 KiB and put through ``receive``: what a UA does with an inbound INVITE (trace
redaction, parse, grammar check, every header accessor, the caller ID as logged, the
SDP body).  Cost is process CPU time, best of several interleaved rounds.  Each row
gives the cost per KiB at both sizes (equal when the work is linear) and the 64 KiB
figure as a multiple of the ordinary INVITE padded to 64 KiB with SDP candidate lines
(target: at most 3x).  Results go to ``bench/RESULTS.md``, section "Hostile input
parsing" (other sections are kept).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parse import _machine  # bench/parse.py: machine, CPU, Python and date lines

from tests.sip.hostile import SHAPES, invite, normal, receive

SIZES = (8 * 1024, 64 * 1024)
ROUNDS = 7
TARGET = 3.0


def per_kib(data: bytes) -> float:
    """Best CPU microseconds per KiB of ``receive(data)`` over ROUNDS runs."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.process_time()
        receive(data)
        best = min(best, time.process_time() - start)
    return best * 1e6 / (len(data) / 1024)


def header_padded(size: int) -> bytes:
    """The ordinary INVITE grown with X- header lines, whose values nothing parses: the
    least work per KiB a message of this size can cost."""
    line = "X-Padding: " + "lorem ipsum dolor sit amet " * 9
    return invite(extra="\r\n".join([line] * max(1, (size - len(invite())) // (len(line) + 2))))


def main() -> None:
    inputs = {"ordinary INVITE, padded": normal, "ordinary INVITE, X- header lines": header_padded}
    inputs.update(SHAPES)
    costs = {name: [per_kib(build(size)) for size in SIZES] for name, build in inputs.items()}
    alone = invite()
    alone_cost = min(per_kib(alone) for _ in range(5))
    padded = costs["ordinary INVITE, padded"][1]
    rows = [
        "| input | µs/KiB at 8 KiB | µs/KiB at 64 KiB | x padded INVITE (64 KiB) |",
        "|---|---:|---:|---:|",
        f"| ordinary INVITE alone ({len(alone)} B) | {alone_cost:.1f} | | "
        f"{alone_cost / padded:.2f} |",
    ]
    worst = 0.0
    for name, (small, large) in costs.items():
        ratio = large / padded
        if name in SHAPES:
            worst = max(worst, ratio)
        rows.append(f"| {name} | {small:.1f} | {large:.1f} | {ratio:.2f} |")
    verdict = "met" if worst <= TARGET else "NOT met"
    lines = [
        "## Hostile input parsing", "", *_machine(), "",
        "Every hostile shape of `tests/sip/hostile.py` grown to 8 and 64 KiB, put through "
        "`receive` (trace redaction, `Message.parse`, `validate()`, every header accessor, "
        "the caller ID as logged, the SDP body); process CPU time, best of "
        f"{ROUNDS} rounds. Linear work costs the same per KiB at both sizes.", "",
        *rows, "",
        f"Worst shape: {worst:.2f}x the padded ordinary INVITE per KiB (target <= "
        f"{TARGET:g}x: {verdict}). The baseline is the ordinary INVITE padded with SDP "
        "candidate lines, what makes real INVITEs large; the row padded with X- header "
        "lines (values nothing parses) is a floor, not a message a UA does work on.", "",
        "Before the issue 14 fixes, the same tests measured on the old code: folded SP/HTAB "
        "runs 852x the padded INVITE at 64 KiB, a=crypto runs 393x, the VT/U+0085/U+2028 "
        "display name 12,870x at 4 KiB (cubic); NameAddr on 64 KiB of SP/HTAB 2,004x and "
        "Via parameters 9,582x an ordinary value of the same size (quadratic).", "",
    ]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).resolve().parent / "RESULTS.md"
    old = out.read_text()
    section = re.compile(r"## Hostile input parsing\n.*?(?=\n## |\Z)", re.S)
    if section.search(old):
        new = section.sub(lambda _: text.rstrip("\n") + "\n", old)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    out.write_text(new.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
