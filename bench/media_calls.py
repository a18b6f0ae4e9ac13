"""Concurrent G.711 echo calls on one core: voiptwisted's media stack vs a bare UDP echo.

Run ``python bench/media_calls.py`` (defaults: N = 50, 100, 200, 400 calls,
10 s measured per run after 1 s of warm-up, about three minutes in all).
For every N, three runs back to back, each in a fresh service process pinned
to core 0 while the load generator (``bench/loadgen.py``) is pinned to core 1:

``floor``
    a bare Twisted ``DatagramProtocol`` per call that writes every datagram
    back (same N sockets, same 1 MB receive buffer, same packet rate);
``plain``
    ``voiptwisted.media.call.CallMedia.answer_offer`` on the generator's SDP
    offer, then ``start(EchoSession(...))``: the real receive path (RTP
    parse, symmetric-RTP latch, jitter buffer, A-law decode, session) and the
    real send path (the shared 20 ms ``Pacer``, A-law encode, RTP header);
``srtp``
    the same with ``RTP/SAVP`` and AES_CM_128_HMAC_SHA1_80 on both sides.

No signalling: it adds nothing to the media cost being measured.  The
service measures itself over the window: CPU (``resource.getrusage``, user +
system), packets handled (echo packets received by the service), memory
(``VmRSS`` delta from before the calls were created, divided by N) and the
pacer's lateness per phase (``Pacer.monitor`` reports how late each phase of
the 20 ms frame started and how long its calls took, so their sum is how late
that phase's last packet left).
Loss is end to end: packets the generator sent vs checked echoes it got back.

With ``--codec pcma,g722,opus`` the runs are ``floor`` and one echo run per codec
(``plain`` media, the generator sending real G.722/Opus frames of speech-like
audio, which the service decodes, hands to the ``EchoSession`` at the codec's
rate and encodes again), by default at N = 50, 100, 200; they go to the "HD codec
echo calls" section, with each codec's µs per encode and decode of one 20 ms
frame measured in the same run.

Results are printed and written to the "Concurrent echo calls" section of
``bench/RESULTS.md`` (``--no-write`` to skip).  Loopback only; every process
started here is stopped here, by its own handle; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## Concurrent echo calls"
MODES = ("floor", "plain", "srtp")
#: Echo runs of ``--codec``: each one codec, plain RTP.
CODEC_MODES = ("pcma", "g722", "opus")
CODEC_SECTION = "## HD codec echo calls"
#: Issue 12 targets: concurrent echo calls on one core, each with loss < TARGET_LOSS.
TARGET_CALLS = {"g722": 200, "opus": 100}
SERVICE_CORE = 0
GENERATOR_CORE = 1
#: Port range for the service's RTP sockets (kept away from the tests' default range).
PORT_RANGE = (30000, 39998)
#: Seconds the generator keeps receiving after its last send; the service lingers a bit longer.
DRAIN = 0.5
#: Issue 4 / issue 5 targets.
#: Run-queue wait (% of the run) above which a run counts as disturbed by other work.
CONTENDED = 10.0
TARGET_LOSS = 0.001
TARGET_CPU_X_FLOOR = 3.0
TARGET_P99_MS = 2.0
TARGET_KB_PER_CALL = 50.0
TARGET_SRTP_X_PLAIN = 1.35


# --------------------------------------------------------------------------- service side
def vmrss_kb() -> int:
    """Resident set size of this process in kB, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _cpu() -> tuple[float, float]:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def run_queue_wait() -> float:
    """Seconds this process has spent runnable but waiting for a CPU (/proc/self/schedstat)."""
    with open("/proc/self/schedstat", encoding="ascii") as handle:
        return int(handle.read().split()[1]) / 1e9


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100.0 * (len(ordered) - 1)))]


class _BenchDialog:
    """Stands in for the SIP dialog: the echo session never hangs up by itself."""

    def __init__(self, index: int) -> None:
        self.call_id = f"bench-{index}"

    def bye(self) -> None:
        return None


def service_main(mode: str, core: int) -> int:
    """One service process: answer the offers read on stdin, echo, report one JSON line."""
    import gc
    import socket

    os.sched_setaffinity(0, {core})
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    from voiptwisted.media.call import CallMedia, MediaConfig
    from voiptwisted.media.pacer import Pacer
    from voiptwisted.media.session import EchoSession

    pacer = Pacer(reactor)
    codecs = (mode,) if mode in CODEC_MODES else ("PCMA", "PCMU")
    config = MediaConfig(port_range=PORT_RANGE, codecs=codecs,
                         srtp="optional", reactor=reactor, pacer=pacer)

    class Echo(DatagramProtocol):
        """The floor: write every datagram straight back to its sender."""

        count = 0

        def datagramReceived(self, data: bytes, addr: Any) -> None:
            Echo.count += 1
            self.transport.write(data, addr)

    sampling = [False]
    gc_pauses: list[float] = []
    gc_started = [0.0]

    def gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        elif sampling[0]:
            gc_pauses.append(time.perf_counter() - gc_started[0])

    offers = json.loads(sys.stdin.readline())["offers"]
    # Warm up the code paths (imports, codec tables, libsrtp) before the memory baseline.
    if mode != "floor":
        warm = CallMedia.answer_offer(config, offers[0].encode(), "127.0.0.1")
        warm.start(EchoSession(_BenchDialog(-1)))
        warm.stop()
    gc.collect()
    rss_before = vmrss_kb()

    calls: list[Any] = []
    floor_ports: list[Any] = []
    answers: list[str] = []
    lateness: list[float] = []
    last_send: list[float] = []

    def monitor(late: float, busy: float) -> None:
        if sampling[0]:
            lateness.append(late)
            last_send.append(late + busy)

    if mode == "floor":
        for _ in range(len(offers)):
            port = reactor.listenUDP(0, Echo(), interface="127.0.0.1")
            port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            floor_ports.append(port)
            number = port.getHost().port
            answers.append(f"v=0\r\nm=audio {number} RTP/AVP 8\r\n")
    else:
        pacer.monitor = monitor
        for index, offer in enumerate(offers):
            media = CallMedia.answer_offer(config, offer.encode(), "127.0.0.1")
            media.start(EchoSession(_BenchDialog(index)))
            calls.append(media)
            answers.append(media.local_sdp.decode("ascii"))
    rss_created = vmrss_kb()
    gc.callbacks.append(gc_timer)
    print(json.dumps({"answers": answers}), flush=True)

    plan = json.loads(sys.stdin.readline())
    t0, warmup, duration = float(plan["t0"]), float(plan["warmup"]), float(plan["duration"])
    linger = float(plan["linger"])
    marks: dict[str, Any] = {}

    def counters() -> tuple[int, int]:
        if mode == "floor":
            return Echo.count, Echo.count
        received = sent = 0
        for media in calls:
            received += media.rtp.stats.packets_received
            sent += media.rtp.stats.packets_sent
        return received, sent

    def mark(name: str) -> None:
        marks[name] = {"wall": time.monotonic(), "cpu": _cpu(), "counters": counters(),
                       "waited": run_queue_wait()}
        if name == "start":
            sampling[0] = True
            marks["missed_start"] = pacer.missed_ticks
        elif name == "end":
            sampling[0] = False
            marks["missed_end"] = pacer.missed_ticks
            marks["rss_end"] = vmrss_kb()

    def finish() -> None:
        received, sent = counters()
        stats: dict[str, int] = {}
        for media in calls:
            figures = media.stats
            for field in ("lost", "late", "duplicates", "malformed", "auth_failures",
                          "replays", "rejected_source", "skipped_ticks"):
                stats[field] = stats.get(field, 0) + getattr(figures, field)
            session = media.session
            dropped = session.dropped_samples // session.frame_size if session is not None else 0
            stats["echo_dropped_frames"] = stats.get("echo_dropped_frames", 0) + dropped
        for media in calls:
            media.stop()
        for port in floor_ports:
            port.stopListening()
        start, end = marks["start"], marks["end"]
        wall = end["wall"] - start["wall"]
        user = end["cpu"][0] - start["cpu"][0]
        system = end["cpu"][1] - start["cpu"][1]
        handled = end["counters"][0] - start["counters"][0]
        result = {
            "mode": mode,
            "calls": len(offers),
            "wall": wall,
            "cpu_user": user,
            "cpu_system": system,
            "cpu_percent": 100.0 * (user + system) / wall if wall > 0 else None,
            "run_queue_wait_percent": 100.0 * (end["waited"] - start["waited"]) / wall,
            "handled": handled,
            "echo_sent_window": end["counters"][1] - start["counters"][1],
            "cpu_us_per_packet": 1e6 * (user + system) / handled if handled else None,
            "received_total": received,
            "sent_total": sent,
            "rss_before_kb": rss_before,
            "rss_created_kb": rss_created,
            "rss_end_kb": marks["rss_end"],
            "kb_per_call": (marks["rss_end"] - rss_before) / len(offers),
            "ticks": len(lateness),
            "missed_ticks": marks.get("missed_end", 0) - marks.get("missed_start", 0),
            "pacer_lateness_ms": {
                "p50": _ms(_percentile(lateness, 50)), "p99": _ms(_percentile(lateness, 99)),
                "max": _ms(max(lateness) if lateness else None)},
            "last_send_ms": {
                "p50": _ms(_percentile(last_send, 50)), "p99": _ms(_percentile(last_send, 99)),
                "max": _ms(max(last_send) if last_send else None)},
            "gc_collections": len(gc_pauses),
            "gc_pause_max_ms": _ms(max(gc_pauses) if gc_pauses else None),
            "rtp": stats,
        }
        print(json.dumps(result), flush=True)
        reactor.stop()

    now = time.monotonic()
    reactor.callLater(max(0.0, t0 + warmup - now), mark, "start")
    reactor.callLater(max(0.0, t0 + warmup + duration - now), mark, "end")
    reactor.callLater(max(0.0, t0 + warmup + duration + linger - now), finish)
    # Hard bound: the process never outlives its run by more than 30 s.
    reactor.callLater(max(0.0, t0 + warmup + duration + linger - now) + 30.0, reactor.stop)
    reactor.run()
    return 0


def _ms(value: float | None) -> float | None:
    return None if value is None else 1000.0 * value


# --------------------------------------------------------------------------- orchestrator
class Child:
    """A child process speaking one JSON line at a time, read with timeouts."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise RuntimeError(f"{self.proc.args[1]} exited with {self.proc.wait(5)}")
        return json.loads(line)

    def close(self) -> None:
        """Wait briefly for a clean exit, else kill this child (our own process only)."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _udp_rcvbuf_errors() -> int:
    """System-wide UDP receive-buffer drops (/proc/net/snmp RcvbufErrors)."""
    with open("/proc/net/snmp", encoding="ascii") as handle:
        rows = [line.split() for line in handle if line.startswith("Udp:")]
    header, values = rows[0], rows[1]
    return int(values[header.index("RcvbufErrors")])


def contention(result: dict) -> float:
    """The larger run-queue wait (%) of the service and the generator in a run."""
    return max(result["run_queue_wait_percent"], result["generator"]["run_queue_wait_percent"])


def run_one(mode: str, calls: int, warmup: float, duration: float, phases: int) -> dict:
    """One run: a fresh service and generator, answer, echo for warmup + duration, report."""
    gen_argv = [sys.executable, str(HERE / "loadgen.py"), "--calls", str(calls),
                "--phases", str(phases), "--core", str(GENERATOR_CORE)]
    if mode == "srtp":
        gen_argv.append("--srtp")
    if mode in CODEC_MODES:
        gen_argv += ["--codec", mode]
    drops_before = _udp_rcvbuf_errors()
    generator = Child(gen_argv)
    service = None
    try:
        offers = generator.receive(timeout=60)
        service = Child([sys.executable, str(Path(__file__).resolve()), "--service", mode,
                         "--core", str(SERVICE_CORE)])
        service.send(offers)
        answers = service.receive(timeout=60)["answers"]
        t0 = time.monotonic() + 0.5
        service.send({"t0": t0, "warmup": warmup, "duration": duration,
                      "linger": 0.1 + DRAIN + 0.2})
        generator.send({"answers": answers, "t0": t0, "send_seconds": warmup + duration + 0.1,
                        "drain": DRAIN})
        budget = warmup + duration + DRAIN + 30
        served = service.receive(timeout=budget)
        generated = generator.receive(timeout=budget)
    finally:
        for child in (generator, service):
            if child is not None:
                child.close()
    served["generator"] = generated
    served["loss"] = generated["loss"]
    served["udp_rcvbuf_errors"] = _udp_rcvbuf_errors() - drops_before
    return served


def srtp_cost(count: int = 20_000) -> tuple[float, float]:
    """CPU seconds per packet of pylibsrtp protect and unprotect alone (172-byte RTP)."""
    import struct

    import pylibsrtp

    policy = pylibsrtp.Policy
    key = os.urandom(30)
    profile = policy.SRTP_PROFILE_AES128_CM_SHA1_80
    tx = pylibsrtp.Session(policy(key=key, ssrc_type=policy.SSRC_ANY_OUTBOUND,
                                  srtp_profile=profile))
    rx = pylibsrtp.Session(policy(key=key, ssrc_type=policy.SSRC_ANY_INBOUND,
                                  srtp_profile=profile))
    packets = [struct.pack("!BBHII", 0x80, 8, i & 0xFFFF, i * 160, 1) + bytes(160)
               for i in range(count)]
    start = time.process_time()
    protected = [tx.protect(packet) for packet in packets]
    middle = time.process_time()
    for packet in protected:
        rx.unprotect(packet)
    end = time.process_time()
    return (middle - start) / count, (end - middle) / count


def load_average() -> str:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return " ".join(handle.read().split()[:3])


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "uname": subprocess.run(["uname", "-a"], capture_output=True, text=True,
                                timeout=10).stdout.strip(),
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": load_average(),
    }


def codec_cost(count: int = 500) -> dict[str, tuple[float, float]]:
    """CPU µs per 20 ms frame to encode and to decode speech-like audio, per codec, with
    the coders our calls use (the registry's: Opus at its default complexity)."""
    sys.path.insert(0, str(ROOT))
    from tests.codecs.signals import frames, speech
    from voiptwisted.codecs import CODECS

    out = {}
    for name in CODEC_MODES:
        codec = CODECS[name.upper()]
        audio = frames(speech(codec.sample_rate, seconds=2.0), codec.frame_samples)
        encoder, decoder = codec.encoder(), codec.decoder()
        payloads = [encoder.encode(frame) for frame in audio]
        start = time.process_time()
        for i in range(count):
            encoder.encode(audio[i % len(audio)])
        middle = time.process_time()
        for i in range(count):
            decoder.decode(payloads[i % len(payloads)])
        end = time.process_time()
        out[name] = (1e6 * (middle - start) / count, 1e6 * (end - middle) / count)
    return out


def render_codecs(
    results: list[dict], info: dict[str, str], args: argparse.Namespace,
    costs: dict[str, tuple[float, float]],
) -> str:
    """The HD codec section: floor and one echo run per codec at each N, and the targets."""
    by = {(r["mode"], r["calls"]): r for r in results}
    out = [
        CODEC_SECTION,
        "",
        f"- machine: `{info['uname']}`",
        f"- CPU: {info['cpu']}",
        f"- Python: {info['python']}",
        f"- date: {info['date']}",
        f"- load average (1/5/15 min) before / after:"
        f" {info['load_before']} / {info['load_after']} (the machine is shared with other"
        " work: see the run-queue wait column)",
        f"- command: `python bench/media_calls.py --codec {','.join(args.codec)}"
        f" --calls {','.join(map(str, args.calls))} --duration {args.duration:g}`",
        "",
        f"As the section above (service on core {SERVICE_CORE}, generator on core"
        f" {GENERATOR_CORE}, one packet per call every 20 ms), but each echo run speaks one"
        " codec: the generator sends real frames of speech-like audio (G.722 at 16 kHz, Opus"
        " at 48 kHz), the service decodes them, the `EchoSession` gets them at the codec's"
        " rate and the service encodes them again (Opus at complexity"
        " `voiptwisted.codecs.registry.OPUS_COMPLEXITY`). Loss = packets the generator sent"
        " vs echo packets of the right payload type it got back (a re-encoded echo cannot be"
        " matched to its packet). Calls/core = what one core would carry at this CPU per"
        " packet (10^6 µs / (50 packets/s x µs/packet)); it holds for rows without loss only:"
        " an echo the starved service dropped was decoded but never encoded, so a row with"
        " loss understates the cost and overstates calls/core. A run whose service or generator"
        f" waited more than {CONTENDED:g}% of the time for its core measures the machine's"
        " other work more than the code: its loss is not the code's.",
        "",
        "| N | mode | service CPU % | run-queue wait % svc / gen | CPU µs/packet | x floor |"
        " calls/core | loss % | pacer p99 ms | KB/call |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        floor = by.get(("floor", r["calls"]))
        ratio = None
        if floor and floor["cpu_us_per_packet"] and r["cpu_us_per_packet"]:
            ratio = r["cpu_us_per_packet"] / floor["cpu_us_per_packet"]
        per_packet = r["cpu_us_per_packet"]
        per_core = 1e6 / (50.0 * per_packet) if per_packet else None
        media = r["mode"] != "floor"
        loss = 100 * r["loss"] if r["loss"] is not None else None
        out.append(
            f"| {r['calls']} | {r['mode']} | {_f(r['cpu_percent'], '.1f')} |"
            f" {_f(r['run_queue_wait_percent'], '.0f')} /"
            f" {_f(r['generator']['run_queue_wait_percent'], '.0f')} |"
            f" {_f(r['cpu_us_per_packet'], '.1f')} | {_f(ratio, '.2f')} |"
            f" {_f(per_core, ',.0f')} | {_f(loss, '.3f')} |"
            f" {_f(r['pacer_lateness_ms']['p99'], '.2f') if media else 'n/a'} |"
            f" {_f(r['kb_per_call'], '.1f')} |"
        )
    out += ["", "Codec CPU per 20 ms frame in this run (one encoder and one decoder, speech):",
            ""]
    for name, (encode, decode) in costs.items():
        out.append(f"- {name}: encode {encode:.1f} µs, decode {decode:.1f} µs")
    out += ["", "Targets (issue 12):", ""]
    for name, target in TARGET_CALLS.items():
        r = by.get((name, target))
        if r is None:
            out.append(f"- {name} echo at {target} calls: not run")
            continue
        fits = r["cpu_percent"] is not None and r["cpu_percent"] < 100.0
        ok = fits and r["loss"] is not None and r["loss"] < TARGET_LOSS
        per_packet = r["cpu_us_per_packet"]
        capacity = f"{1e6 / (50.0 * per_packet):.0f}" if per_packet else "n/a"
        verdict = _yes(ok)
        if not ok and contention(r) > CONTENDED:
            verdict = (f"not measurable in this run (run-queue wait {contention(r):.0f}%: the"
                       " service did not get its core)")
        out.append(f"- {name} echo, {target} concurrent calls on one core with loss < 0.1%:"
                   f" {r['cpu_percent']:.0f}% CPU, loss {100 * r['loss']:.3f}%, {capacity}"
                   f" calls/core at its CPU per packet — {verdict}")
    notes = []
    for r in results:
        g = r["generator"]
        problems = []
        if g["bad"]:
            problems.append(f"{g['bad']} bad echoes")
        if g["silent_calls"]:
            problems.append(f"{g['silent_calls']} calls without echo")
        if r["udp_rcvbuf_errors"]:
            problems.append(f"{r['udp_rcvbuf_errors']} UDP receive-buffer drops system-wide")
        for key in ("late", "echo_dropped_frames", "skipped_ticks", "malformed"):
            if r.get("rtp", {}).get(key):
                problems.append(f"{key.replace('_', ' ')}: {r['rtp'][key]}")
        if problems:
            notes.append(f"- {r['mode']} N={r['calls']}: " + "; ".join(problems))
    if notes:
        out += ["", "Run notes:", "", *notes]
    return "\n".join(out) + "\n"


def _f(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _yes(ok: bool) -> str:
    return "met" if ok else "NOT met"


def render(results: list[dict], info: dict[str, str], args: argparse.Namespace) -> str:
    """The Markdown section: machine, table, targets."""
    by = {(r["mode"], r["calls"]): r for r in results}
    out = [
        SECTION,
        "",
        f"- machine: `{info['uname']}`",
        f"- CPU: {info['cpu']}",
        f"- Python: {info['python']}",
        f"- date: {info['date']}",
        f"- load average (1/5/15 min) before / after:"
        f" {info['load_before']} / {info['load_after']}",
        f"- command: `python bench/media_calls.py --calls {','.join(map(str, args.calls))}"
        f" --duration {args.duration:g}`",
        "",
        f"Service pinned to core {SERVICE_CORE}, load generator (`bench/loadgen.py`) to core"
        f" {GENERATOR_CORE}; 127.0.0.1 only; one PCMA packet per call every 20 ms"
        f" (calls spread over {args.phases} phases of the 20 ms); {args.warmup:g} s warm-up,"
        f" then {args.duration:g} s measured, fresh service process per run. `floor` = bare"
        " Twisted `DatagramProtocol` echo; `plain` = `CallMedia.answer_offer` +"
        " `EchoSession` (shared `Pacer`); `srtp` = the same with AES_CM_128_HMAC_SHA1_80."
        " CPU = user + system of the service process over the window; packets = echo"
        " packets the service received in the window. Loss = generator sent vs checked"
        " echoes received. Pacer p99 = how late a pacer phase started (`Pacer.monitor`; the"
        " 20 ms frame has 10 phases, each call in one); last-send p99 = that plus the time"
        " until the phase's last call had sent. KB/call = VmRSS growth"
        " from before the calls were created / N. Run-queue wait = time the service was"
        " runnable but another process had its core (/proc/self/schedstat): the machine is"
        " shared with other work, and where that wait is high the loss and pacing figures"
        " measure the contention, not the code. Single run: only ratios within it mean much.",
        "",
        "| N | mode | service CPU % | run-queue wait % svc / gen | packets/s | CPU µs/packet |"
        " x floor | loss % | pacer p99 ms | last-send p99 ms | missed ticks | KB/call |"
        " RTT p99 ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        floor = by.get(("floor", r["calls"]))
        ratio = None
        if floor and floor["cpu_us_per_packet"] and r["cpu_us_per_packet"]:
            ratio = r["cpu_us_per_packet"] / floor["cpu_us_per_packet"]
        media = r["mode"] != "floor"
        loss = 100 * r["loss"] if r["loss"] is not None else None
        out.append(
            f"| {r['calls']} | {r['mode']} | {_f(r['cpu_percent'], '.1f')} |"
            f" {_f(r['run_queue_wait_percent'], '.0f')} /"
            f" {_f(r['generator']['run_queue_wait_percent'], '.0f')} |"
            f" {_f(r['handled'] / r['wall'], ',.0f')} | {_f(r['cpu_us_per_packet'], '.1f')} |"
            f" {_f(ratio, '.2f')} | {_f(loss, '.3f')} |"
            f" {_f(r['pacer_lateness_ms']['p99'], '.2f') if media else 'n/a'} |"
            f" {_f(r['last_send_ms']['p99'], '.2f') if media else 'n/a'} |"
            f" {r['missed_ticks'] if media else 'n/a'} | {_f(r['kb_per_call'], '.1f')} |"
            f" {_f(r['generator']['rtt_ms']['p99'], '.2f')} |"
        )
    out += ["", "Targets (issue 4, issue 5):", ""]
    for mode in ("plain", "srtp"):
        top = by.get((mode, 400))
        if top is not None:
            out.append(f"- 400 concurrent echo calls on one core, loss < 0.1% ({mode}):"
                       f" {100 * top['loss']:.3f}% at {top['cpu_percent']:.0f}% CPU —"
                       f" {_yes(top['loss'] < TARGET_LOSS)}")
        else:
            out.append(f"- 400 concurrent calls ({mode}): not run")
    for mode in ("plain", "srtp"):
        ratios = []
        for n in args.calls:
            r, floor = by.get((mode, n)), by.get(("floor", n))
            if r and floor and r["cpu_us_per_packet"] and floor["cpu_us_per_packet"]:
                ratios.append((n, r["cpu_us_per_packet"] / floor["cpu_us_per_packet"]))
        if ratios:
            text = ", ".join(f"N={n}: {x:.2f}x" for n, x in ratios)
            out.append(f"- CPU per packet within {TARGET_CPU_X_FLOOR:g}x the bare echo ({mode}):"
                       f" {text} — {_yes(all(x <= TARGET_CPU_X_FLOOR for _, x in ratios))}")
    for mode in ("plain", "srtp"):
        r = by.get((mode, 200))
        if r is not None:
            p99 = r["pacer_lateness_ms"]["p99"]
            last = r["last_send_ms"]["p99"]
            out.append(f"- p99 pacing error < {TARGET_P99_MS:g} ms at 200 calls ({mode}):"
                       f" pacer tick {p99:.2f} ms — {_yes(p99 < TARGET_P99_MS)}"
                       f" (last call's send in the tick: {last:.2f} ms —"
                       f" {_yes(last < TARGET_P99_MS)})")
    kb = [(r["mode"], r["calls"], r["kb_per_call"]) for r in results if r["mode"] != "floor"]
    if kb:
        worst = max(kb, key=lambda item: item[2])
        out.append(f"- under {TARGET_KB_PER_CALL:g} KB per active call: worst {worst[2]:.1f} KB"
                   f" ({worst[0]}, N={worst[1]}) — "
                   f"{_yes(all(k < TARGET_KB_PER_CALL for _, _, k in kb))}")
    ratios = []
    for n in args.calls:
        plain, srtp = by.get(("plain", n)), by.get(("srtp", n))
        if plain and srtp and plain["cpu_us_per_packet"] and srtp["cpu_us_per_packet"]:
            ratios.append((n, srtp["cpu_us_per_packet"] / plain["cpu_us_per_packet"]))
    if ratios:
        text = ", ".join(f"N={n}: {x:.2f}x" for n, x in ratios)
        out.append(f"- SRTP CPU per packet within {TARGET_SRTP_X_PLAIN:g}x plain: {text} — "
                   f"{_yes(all(x <= TARGET_SRTP_X_PLAIN for _, x in ratios))}")
    protect, unprotect = info["srtp_cost"]
    out.append(f"- for reference, pylibsrtp alone in this run: protect {1e6 * protect:.2f} µs +"
               f" unprotect {1e6 * unprotect:.2f} µs per echoed packet")
    notes = []
    for r in results:
        g = r["generator"]
        rtp = r.get("rtp", {})
        problems = []
        if r.get("attempts", 1) > 1:
            problems.append(f"least contended of {r['attempts']} attempts")
        if r.get("gc_pause_max_ms") and r["gc_pause_max_ms"] > 1.0:
            problems.append(f"longest GC pause {r['gc_pause_max_ms']:.1f} ms")
        if g["bad"]:
            problems.append(f"{g['bad']} bad echoes")
        if g["silent_calls"]:
            problems.append(f"{g['silent_calls']} calls without echo")
        if g["unfinished_slots"]:
            problems.append(f"generator missed {g['unfinished_slots']} send slots")
        if r["udp_rcvbuf_errors"]:
            problems.append(f"{r['udp_rcvbuf_errors']} UDP receive-buffer drops system-wide"
                            " (any process's sockets)")
        for key in ("auth_failures", "replays", "late", "echo_dropped_frames",
                    "skipped_ticks", "malformed"):
            if rtp.get(key):
                problems.append(f"{key.replace('_', ' ')} (whole run, call set-up included):"
                                f" {rtp[key]}")
        p99 = g["send_lateness_ms"]["p99"]
        if p99 is not None and p99 > 2.0:
            problems.append(f"generator send lateness p99 {p99:.2f} ms")
        if problems:
            notes.append(f"- {r['mode']} N={r['calls']}: " + "; ".join(problems))
    if notes:
        out += ["", "Run notes:", "", *notes]
    return "\n".join(out) + "\n"


def write_section(text: str, section: str = SECTION) -> None:
    """Replace (or append) our section of RESULTS.md, leaving every other section as it is."""
    current = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmarks\n"
    if not current.lstrip().startswith("# "):
        current = "# Benchmarks\n\n" + current
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=lambda s: [int(x) for x in s.split(",")],
                        default=None, help="comma-separated call counts (default 50,100,200,400;"
                        " with --codec 50,100,200)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES))
    parser.add_argument("--phases", type=int, default=10)
    parser.add_argument("--retries", type=int, default=1,
                        help=f"repeat a run whose service or generator waited more than"
                             f" {CONTENDED:g}%% for its core (keep the less contended one)")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--codec", type=lambda s: s.lower().split(","), default=None,
                        help="echo runs per codec (pcma,g722,opus) beside the floor, into the"
                             " HD codec section (default N: 50,100,200)")
    parser.add_argument("--service", choices=MODES + CODEC_MODES, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=SERVICE_CORE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.service:
        return service_main(args.service, args.core)
    if args.codec is not None:
        if set(args.codec) - set(CODEC_MODES):
            parser.error(f"codecs are {','.join(CODEC_MODES)}")
        args.modes = ["floor", *args.codec]
        args.calls = args.calls or [50, 100, 200]
    elif set(args.modes) - set(MODES):
        parser.error(f"modes are {','.join(MODES)}")
    args.calls = args.calls or [50, 100, 200, 400]
    if not all(1 <= n <= 2000 for n in args.calls) or not 1 <= args.duration <= 60:
        parser.error("calls must be 1..2000 and duration 1..60 s")
    if not 0 <= args.retries <= 3:
        parser.error("retries must be 0..3")
    if os.cpu_count() is None or os.cpu_count() < 2:
        parser.error("needs two cores (service and generator pinned apart)")
    info = machine()
    results = []
    for n in args.calls:
        for mode in MODES + CODEC_MODES:
            if mode not in args.modes:
                continue
            result = run_one(mode, n, args.warmup, args.duration, args.phases)
            for _ in range(args.retries):
                if contention(result) <= CONTENDED:
                    break
                print(f"N={n:4d} {mode:5s} run-queue wait {contention(result):.0f}%:"
                      " repeating", flush=True)
                again = run_one(mode, n, args.warmup, args.duration, args.phases)
                attempts = result.get("attempts", 1) + 1
                result = min(result, again, key=contention)
                result["attempts"] = attempts
            results.append(result)
            g = result["generator"]
            print(f"N={n:4d} {mode:5s} cpu={result['cpu_percent']:5.1f}%"
                  f" wait={result['run_queue_wait_percent']:3.0f}%"
                  f"/{g['run_queue_wait_percent']:3.0f}%"
                  f" {_f(result['cpu_us_per_packet'], '6.1f')} us/pkt"
                  f" loss={100 * result['loss']:.3f}%"
                  f" pacer_p99={_f(result['pacer_lateness_ms']['p99'], '.2f')}ms"
                  f" last_p99={_f(result['last_send_ms']['p99'], '.2f')}ms"
                  f" {result['kb_per_call']:.1f}KB/call rtt_p99={_f(g['rtt_ms']['p99'], '.1f')}ms"
                  f" bad={g['bad']} drops={result['udp_rcvbuf_errors']}", flush=True)
    info["load_after"] = load_average()
    if args.codec is not None:
        text = render_codecs(results, info, args, codec_cost())
        print()
        print(text)
        print(json.dumps(results), file=sys.stderr)
        if not args.no_write:
            write_section(text, CODEC_SECTION)
        return 0
    info["srtp_cost"] = srtp_cost()
    text = render(results, info, args)
    print()
    print(text)
    print(json.dumps(results), file=sys.stderr)
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
