"""Call setup through Kamailio over TLS and UDP, driven by SIPp: ``python bench/call_setup.py``.

``--transport udp,tls`` (the default) measures both transports in the same run, interleaved
per rate.  Over UDP, SIPp's UAC talks UDP straight into Kamailio (no relay) and our callee is
a second UA process registered over UDP (``sip:carol@...;transport=udp``); the baseline
callee is the same SIPp UAS, reached by a UAC over UDP.  What follows describes TLS.

What runs (all on 127.0.0.1, every process started here and stopped by its PID):

* Kamailio (``tests/integration/peers.Kamailio``) as registrar + record-routing proxy, and a
  socat TLS relay in front of its TLS listener, because SIPp has no TLS.
* **Our UA**: a child process (this file with ``--ua``) pinned to one core with
  ``os.sched_setaffinity``; it registers ``alice`` over TLS with
  ``voiptwisted.sip.connect.run`` and answers every INVITE at once (100 Trying, then 200 with
  an SDP answer, no 180) with the base, silent ``Session``: SDP offer/answer and an RTP/RTCP
  port pair bound per call from a range run for real, but no RTP packet flows (SIPp sends none
  and a silent session sends none), so what is measured is signalling + SDP + port allocation.
* **Baseline**: a SIPp UAS registered as ``bob`` (over UDP: SIPp cannot register and be a UAS
  on one connection) answering with 200 at once (``bench/sipp/uas_answer.xml``; why no 180 is
  said there).  It is the floor for the path: SIPp UAC -> TCP -> socat -> TLS -> Kamailio ->
  (TLS to us | UDP to SIPp UAS).
* The load: SIPp UAC (``tests/integration/sipp/uac_call.xml``: INVITE, 200, ACK, hold, BYE)
  over one TCP connection through a socat TLS relay (with TCP_NODELAY: the harness's
  ``TlsRelay`` leaves Nagle on, which adds 10-60 ms to every INVITE->200), stepped 50, 100,
  200, 300 ... cps; each step is ``--step-seconds`` long and at most ``--max-calls`` calls.
  Ours and the baseline are interleaved per step so background load on the machine hits both
  alike.  Before the first step every callee takes ``WARM_UP_CALLS`` unmeasured calls
  (``--no-warm-up`` skips them): our UA loads its media stack with its first call, and the
  calls queued behind that one-off stall made the first step's p99.

A step passes ("sustained") when every call succeeded in SIPp, our UA saw exactly that many
calls and hangups, and the calls were answered at >= 90 % of the offered rate.  The stepping
stops at the first failed step of each target.  INVITE->200 latency comes from SIPp's
``-trace_rtt`` (one line per call, whole milliseconds).  CPU per call is the process CPU time
(user + system) of our UA process (or of the SIPp UAS) over the step divided by its calls;
Kamailio's CPU (all its processes) is shown too.  Results go to the "Call setup" section of
``bench/RESULTS.md`` (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Call setup"
SCENARIO = "uac_call"
#: The baseline callee (answers at once with 200, like our UA here).
UAS_SCENARIO = Path(__file__).resolve().parent / "sipp" / "uas_answer.xml"
TARGET_CPS = 200
#: Issue 10: SIP over UDP sustains at least this (with CPU per call no more than over TLS).
TARGET_UDP_CPS = 800
TARGET_P99_MS = 50.0
#: Answered rate below this fraction of the offered rate fails the step (SIPp fell behind).
MIN_RATE_FRACTION = 0.9
#: Hard bound on the steps (also bounded by --rates).
MAX_STEPS = 20
#: Unmeasured calls into each callee before the first step, at WARM_UP_RATE cps.  Our UA
#: loads the media stack (numpy, SDP negotiation) with its first call (issue 6: idle memory),
#: which took 140 ms of CPU and 350-450 ms of wall time on this shared machine; every call
#: arriving meanwhile queued behind it, so that one-off start-up cost made the first
#: step's p99 (~20 calls of 500 at 50 cps) instead of the path's steady state.
WARM_UP_CALLS = 10
WARM_UP_RATE = 10


# ------------------------------------------------------------------------------------------
# The UA child process


def ua_main() -> None:
    """Child: register over TLS, answer every call, report counters on stdin commands.

    The first stdin line is a JSON config (the password travels here, never in argv).
    Then one command per line: ``stats`` -> one JSON line; ``quit`` -> unregister and exit.
    """
    config = json.loads(sys.stdin.readline())
    os.sched_setaffinity(0, {int(config["cpu"])})

    from twisted.internet import reactor, stdio
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )
    from twisted.protocols.basic import LineReceiver

    from voiptwisted.media.call import MediaConfig
    from voiptwisted.media.session import Session
    from voiptwisted.sip.connect import run
    from voiptwisted.sip.dialog import Dialog
    from voiptwisted.sip.uri import SipURI

    log_file = open(config["log"], "a", encoding="utf-8")  # noqa: SIM115 (lives until exit)
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(log_file),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
            )
        ],
        redirectStandardIO=False,
    )
    counters = {"calls": 0, "hangups": 0}
    state: dict[str, Any] = {"protocol": None}

    class AnswerAtOnce(Dialog):
        """200 with the SDP answer at once (no 180), silent session (no RTP sent)."""

        def call_received(self) -> None:
            counters["calls"] += 1
            self.answer(session_class=Session)

        def hangup_received(self) -> None:
            counters["hangups"] += 1

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            command = line.strip().decode("ascii", "replace")
            if command == "stats":
                self.report()
            elif command == "quit":
                self.quit()

        def report(self) -> None:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            protocol = state["protocol"]
            payload = dict(
                counters,
                cpu=usage.ru_utime + usage.ru_stime,
                connected=protocol is not None and protocol.transport is not None,
                dialogs=protocol.dialog_count if protocol else -1,
                transactions=protocol.transaction_count if protocol else -1,
                timers=protocol.pending_timer_count if protocol else -1,
            )
            self.sendLine(json.dumps(payload).encode())

        def quit(self) -> None:
            protocol = state["protocol"]
            d = protocol.service.stopService() if protocol is not None else None
            if d is not None and hasattr(d, "addBoth"):
                timeout = reactor.callLater(5, d.cancel)
                d.addBoth(lambda _: timeout.active() and timeout.cancel())
                d.addBoth(lambda _: reactor.stop())
            else:
                reactor.stop()

        def connectionLost(self, reason: Any = None) -> None:
            if reactor.running:
                reactor.stop()

    control = Control()
    stdio.StandardIO(control)
    low = int(config["port_base"])
    media = MediaConfig(port_range=(low, low + 4000), reactor=reactor)

    def registered(protocol: Any) -> None:
        state["protocol"] = protocol
        control.sendLine(json.dumps({"registered": True}).encode())

    def failed(failure: Any) -> None:
        control.sendLine(json.dumps({"registered": False, "error": str(failure.value)}).encode())
        reactor.stop()

    run(
        SipURI.parse(config["aor"]),
        keepalive=None if ";transport=udp" in config["aor"] else 30.0,
        password=config["password"],
        ca_file=config["ca_file"],
        reactor=reactor,
        dialog_class=AnswerAtOnce,
        media_config=media,
    ).addCallbacks(registered, failed)
    reactor.run()


# ------------------------------------------------------------------------------------------
# Parent: helpers


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process from /proc (0.0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / clock_ticks()


def tree_cpu(root_pid: int) -> float:
    """CPU seconds of ``root_pid`` and its direct children (Kamailio's workers)."""
    total = proc_cpu(root_pid)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == root_pid:
            total += (int(fields[11]) + int(fields[12])) / clock_ticks()
    return total


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (sorted here)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


def read_rtt(directory: Path) -> tuple[list[float], list[float]]:
    """(answer times in s, INVITE->200 ms) from the SIPp ``-trace_rtt`` files in ``directory``."""
    dates: list[float] = []
    rtts: list[float] = []
    for path in sorted(directory.glob("*_rtt.csv")):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    dates.append(float(parts[0]) / 1000.0)
                    rtts.append(float(parts[1]))
                except ValueError:
                    continue
    return dates, rtts


def scenario_counts(screen_log: str) -> str:
    """The last per-message counter table SIPp printed (where stuck calls are waiting)."""
    start = screen_log.rfind("Messages  Retrans")
    if start < 0:
        return ""
    rows = []
    for line in screen_log[start:].splitlines()[1:40]:
        if re.search(r"-{3,}>|<-{3,}|\[\s*\d+ms\]|Pause", line):
            rows.append(" ".join(line.split()))
        elif rows and not line.strip():
            break
    return " | ".join(rows)


#: Who our UA registers as, per transport (two UA processes may run side by side).
UA_USERS = {"tls": "alice", "udp": "carol"}


class UAProcess:
    """Our UA in its own process, pinned to ``cpu``; line-oriented JSON over its stdio.

    Registered over TLS as alice, or over UDP (``;transport=udp``) as carol.
    """

    def __init__(self, kamailio: Any, workdir: Path, cpu: int, transport: str = "tls") -> None:
        host, port = kamailio.address(transport)
        user = UA_USERS[transport]
        suffix = ";transport=udp" if transport == "udp" else ""
        self.log_path = workdir / f"ua-{transport}.log"
        self.config = {
            "aor": f"sip:{user}@{host}:{port}{suffix}",
            "password": kamailio.users[user],
            "ca_file": kamailio.ca_cert,
            "cpu": cpu,
            # below the ephemeral range; other benches use 30000+
            "port_base": 21000 if transport == "tls" else 25000,
            "log": str(self.log_path),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--ua"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(ROOT),
        )
        self._send(json.dumps(self.config))
        answer = self._read(timeout)
        if not answer.get("registered"):
            self.stop()
            raise RuntimeError(f"UA did not register: {answer.get('error')}")

    def _send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"UA silent for {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"UA exited (rc={self.proc.poll()}): {self.log_tail()}")
        return json.loads(line)

    def stats(self) -> dict[str, Any]:
        self._send("stats")
        return self._read(10.0)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self._send("quit")
            self.proc.wait(8)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class NoDelayRelay:
    """The same socat TLS relay as the harness's ``TlsRelay`` plus ``nodelay`` on both sides.

    socat leaves Nagle's algorithm on; with a SIP transaction's back-to-back small writes
    that can hold a message back until the peer's delayed ACK.  Started with the harness's
    ``ManagedProcess`` and stopped by its PID (with the children it forked).
    """

    def __init__(self, kamailio: Any, workdir: Path) -> None:
        from tests.integration.peers import ManagedProcess, free_port

        self.port = free_port("tcp")
        self.address = ("127.0.0.1", self.port)
        self.log_path = workdir / f"socat-nodelay-{self.port}.log"
        self.proc = ManagedProcess(
            [
                "socat",
                "-d",
                "-d",
                f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr,nodelay",
                f"OPENSSL:127.0.0.1:{kamailio.tls_port},cafile={kamailio.ca_cert},"
                "commonname=localhost,verify=1,nodelay",
            ],
            self.log_path,
        )

    def start(self) -> NoDelayRelay:
        from tests.integration.peers import wait_until

        self.proc.start()
        wait_until(
            lambda: "listening on" in self.proc.read_log() or not self.proc.running,
            10,
            0.05,
            "socat listener",
        )
        if not self.proc.running:
            raise RuntimeError("socat exited: " + self.proc.read_log()[-1000:])
        return self

    def stop(self) -> None:
        self.proc.stop(5.0, group=True)


@dataclass
class Step:
    target: str
    rate: int
    calls: int
    successful: int = 0
    failed: int = 0
    answered_rate: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    ua_cpu_per_call_us: float = float("nan")
    kamailio_cpu_per_call_us: float = float("nan")
    shm_free_min: float = float("inf")
    ok: bool = False
    problems: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# Parent: the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from tests.integration.peers import Kamailio, TlsRelay

        self.args = args
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-call-setup-")
        self.workdir = Path(self.tmp.name)
        self.transports = transports(args.transport)
        self.kamailio = Kamailio(
            tmpdir=self.workdir / "kamailio",
            debug=1,
            shm_mb=args.kamailio_shm,
            users={"alice": "secret", "bob": "secret", "carol": "secret"},
        )
        self.relay_class = TlsRelay
        self.relay: Any = None
        self.uas_by_transport: dict[str, UAProcess] = {}
        self.uas: Any = None
        self.steps: list[Step] = []

    # peers ------------------------------------------------------------------------------
    def start(self) -> None:
        from tests.integration.peers import Sipp

        self.kamailio.start()
        if "tls" in self.transports:
            if self.args.relay == "nodelay":
                self.relay = NoDelayRelay(self.kamailio, self.workdir).start()
            else:
                self.relay = self.relay_class.to_kamailio(self.kamailio).start()
        for transport in self.transports:
            ua = UAProcess(self.kamailio, self.workdir, self.args.ua_cpu, transport)
            self.uas_by_transport[transport] = ua
            ua.start()
            self.kamailio.wait_for_bindings(UA_USERS[transport], 1, timeout=10)
        self.uas = Sipp(
            str(UAS_SCENARIO),
            service="bob",
            calls=10_000_000,
            timeout=3600,
            tmpdir=self.workdir,
            extra_args=("-l", "5000", "-buff_size", "4194304"),
        )
        self._quiet(self.uas)
        self.uas.start()
        register = Sipp(
            "register",
            self.kamailio.address("udp"),
            service="bob",
            auth=("bob", self.kamailio.users["bob"]),
            keys={
                "contact_host": "127.0.0.1",
                "contact_port": self.uas.local_port,
                "expires": 3600,
            },
            timeout=10,
            tmpdir=self.workdir,
        )
        result = register.run(15)
        if not result.ok:
            raise RuntimeError(f"SIPp UAS could not register bob: {result.errors[-500:]}")
        self.kamailio.wait_for_bindings("bob", 1, timeout=10)

    def stop(self) -> None:
        stoppers = [lambda ua=ua: ua.stop() for ua in self.uas_by_transport.values()]
        for stopper in (
            *stoppers,
            lambda: self.uas and self.uas.stop(),
            lambda: self.relay and self.relay.stop(),
            lambda: self.kamailio.stop(),
        ):
            try:
                stopper()
            except Exception as exc:  # keep stopping the others
                print(f"stop: {exc}", file=sys.stderr)
        self.tmp.cleanup()

    @staticmethod
    def _quiet(agent: Any) -> None:
        """Drop ``-trace_msg`` (a log line per message would load SIPp, not the path)."""
        argv = agent.argv
        if "-trace_msg" in argv:
            index = argv.index("-trace_msg")
            del argv[index]
            if index < len(argv) and argv[index] == "-message_file":
                del argv[index : index + 2]

    def warm_up(self, target: str) -> None:
        """A few unmeasured calls into *target* (see :data:`WARM_UP_CALLS`); a failure is
        only printed: the measured steps say what works."""
        from tests.integration.peers import Sipp

        callee, transport = target.split("/")
        stepdir = self.workdir / f"warm-up-{callee}-{transport}"
        stepdir.mkdir()
        agent = Sipp(
            SCENARIO,
            self.relay.address if transport == "tls" else self.kamailio.address("udp"),
            transport="t1" if transport == "tls" else "u1",
            service=UA_USERS[transport] if callee == "voiptwisted" else "bob",
            calls=WARM_UP_CALLS,
            rate=WARM_UP_RATE,
            duration_ms=self.args.hold_ms,
            timeout=30,
            tmpdir=stepdir,
        )
        self._quiet(agent)
        result = agent.run(45)
        if not result.ok:
            print(f"warm-up of {target}: {result.successful} of {WARM_UP_CALLS} calls ok",
                  flush=True)

    # one step ------------------------------------------------------------------------------
    def step(self, target: str, rate: int) -> Step:
        from tests.integration.peers import Sipp

        calls = max(1, min(int(rate * self.args.step_seconds), self.args.max_calls))
        step = Step(target, rate, calls)
        callee, transport = target.split("/")
        ours = callee == "voiptwisted"
        ua = self.uas_by_transport[transport]
        service = UA_USERS[transport] if ours else "bob"
        stepdir = self.workdir / f"{callee}-{transport}-{rate}"
        stepdir.mkdir()
        agent = Sipp(
            SCENARIO,
            self.relay.address if transport == "tls" else self.kamailio.address("udp"),
            transport="t1" if transport == "tls" else "u1",
            service=service,
            calls=calls,
            rate=rate,
            duration_ms=self.args.hold_ms,
            timeout=int(calls / rate + 30),
            tmpdir=stepdir,
            extra_args=(
                "-trace_rtt",
                "-rtt_freq",
                "1",
                "-l",
                str(max(100, rate * 4)),
                "-buff_size",
                "4194304",
            ),
        )
        self._quiet(agent)
        ua_before = ua.stats() if ours else None
        uas_cpu_before = proc_cpu(self.uas._proc.pid) if not ours else 0.0
        kam_before = tree_cpu(self.kamailio.pid)
        log_mark = len(self.kamailio.log)
        started = time.monotonic()
        deadline = started + calls / rate + 45
        agent.start()
        while agent.running and time.monotonic() < deadline:
            free = self.shm_free()
            if free is not None:
                step.shm_free_min = min(step.shm_free_min, free)
            time.sleep(1.0)
        if agent.running:
            step.problems.append("SIPp did not finish in time")
            result = agent.stop()
        else:
            result = agent.collect()
        step.successful, step.failed = result.successful, result.failed
        if result.returncode != 0:
            step.problems.append(f"SIPp rc={result.returncode}")
        if result.failed or result.successful != calls:
            step.problems.append(
                f"SIPp: {result.successful} ok, {result.failed} failed of {calls}"
            )
            errors = [line for line in result.errors.splitlines() if line.strip()]
            if errors:
                step.problems.append("SIPp errors (last): " + " | ".join(errors[-4:])[:600])
            counts = scenario_counts(result.log)
            if counts:
                step.problems.append("SIPp UAC messages/retrans/timeout/unexpected: " + counts)
        dates, rtts = read_rtt(stepdir)
        if len(dates) >= 2 and dates[-1] > dates[0]:
            step.answered_rate = (len(dates) - 1) / (dates[-1] - dates[0])
        if rtts:
            step.p50_ms = percentile(rtts, 0.50)
            step.p99_ms = percentile(rtts, 0.99)
            step.max_ms = max(rtts)
        if step.answered_rate < MIN_RATE_FRACTION * rate:
            step.problems.append(f"answered only {step.answered_rate:.0f} cps of {rate} offered")
        if ours:
            assert ua_before is not None
            ua_after = self._ua_settled(ua, ua_before, calls)
            used = ua_after["cpu"] - ua_before["cpu"]
            seen = ua_after["calls"] - ua_before["calls"]
            hung = ua_after["hangups"] - ua_before["hangups"]
            if seen != calls or hung != calls:
                step.problems.append(f"UA saw {seen} calls / {hung} hangups of {calls}")
            left = (ua_after["dialogs"], ua_after["transactions"], ua_after["timers"])
            if left != (0, 0, 0):
                step.problems.append(f"UA left dialogs/transactions/timers {left}")
            if not ua_after["connected"]:
                step.problems.append(f"UA lost its {transport.upper()} flow")
            tail = ua.log_tail()
            if step.problems and tail:
                step.problems.append("UA log: " + tail.replace("\n", " | ")[-600:])
        else:
            time.sleep(0.5)
            used = proc_cpu(self.uas._proc.pid) - uas_cpu_before
            if step.problems:
                uas_errors = [
                    line for line in self.uas.collect().errors.splitlines() if line.strip()
                ]
                if uas_errors:
                    step.problems.append(
                        "SIPp UAS errors (last): " + " | ".join(uas_errors[-4:])[:600]
                    )
        kam_used = tree_cpu(self.kamailio.pid) - kam_before
        if step.successful:
            step.ua_cpu_per_call_us = used / step.successful * 1e6
            step.kamailio_cpu_per_call_us = kam_used / step.successful * 1e6
        if step.problems:
            warnings = [
                " ".join(line.split())
                for line in self.kamailio.log[log_mark:].splitlines()
                if re.search(r"WARNING|ERROR|CRITICAL", line)
            ]
            if warnings:
                step.problems.append(
                    f"Kamailio: {len(warnings)} warning/error lines; first: "
                    + " | ".join(warnings[:3])[:700]
                )
                step.problems.append("Kamailio last: " + " | ".join(warnings[-2:])[:500])
            step.problems.append(
                f"Kamailio free shared memory (lowest sample during the step): "
                f"{step.shm_free_min / 1e6:.1f} MB of {self.kamailio.shm_mb} MB"
            )
        if not self.kamailio.running:
            step.problems.append("Kamailio died")
        step.ok = not step.problems
        return step

    def shm_free(self) -> int | None:
        """Kamailio's free shared memory in bytes (``kamcmd core.shmmem``), None on error."""
        try:
            done = self.kamailio.rpc("core.shmmem", timeout=3)
        except Exception:
            return None
        match = re.search(r"free:\s*(\d+)", done.stdout or "")
        return int(match.group(1)) if match else None

    def _ua_settled(self, ua: UAProcess, before: dict[str, Any], calls: int) -> dict[str, Any]:
        """UA counters once every call has hung up and been forgotten (bounded wait: over
        UDP the BYE's server transaction lingers Timer J = 32 s, RFC 3261 §17.2.2)."""
        deadline = time.monotonic() + 45
        while True:
            stats = ua.stats()
            done = stats["hangups"] - before["hangups"] >= calls and (
                stats["dialogs"],
                stats["transactions"],
                stats["timers"],
            ) == (0, 0, 0)
            if done or time.monotonic() > deadline:
                return stats
            time.sleep(0.2)

    # the run --------------------------------------------------------------------------------
    def run(self) -> None:
        rates = [int(r) for r in self.args.rates.split(",") if r.strip()][:MAX_STEPS]
        targets = []
        for transport in self.transports:
            targets.append(f"voiptwisted/{transport}")
            if not self.args.no_baseline:
                targets.append(f"baseline/{transport}")
        alive = set(targets)
        if not self.args.no_warm_up:
            for target in targets:
                self.warm_up(target)
        for rate in rates:
            for target in targets:
                if target not in alive:
                    continue
                step = self.step(target, rate)
                self.steps.append(step)
                print(self.describe(step), flush=True)
                if not step.ok:
                    alive.discard(target)
                    for problem in step.problems:
                        print(f"    {problem}", flush=True)
                time.sleep(1.0)
            if not alive:
                break

    @staticmethod
    def describe(step: Step) -> str:
        return (
            f"{step.target:15s} {step.rate:4d} cps x {step.calls:5d}: "
            f"{'OK  ' if step.ok else 'FAIL'} answered {step.answered_rate:6.1f} cps, "
            f"INVITE->200 p50 {step.p50_ms:.0f} ms p99 {step.p99_ms:.0f} ms "
            f"max {step.max_ms:.0f} ms, CPU/call {step.ua_cpu_per_call_us:.0f} us "
            f"(Kamailio {step.kamailio_cpu_per_call_us:.0f} us)"
        )


# ------------------------------------------------------------------------------------------
# Report


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    versions = {}
    for name, argv in (("kamailio", ["kamailio", "-v"]), ("sipp", ["sipp", "-v"])):
        out = subprocess.run(argv, capture_output=True, text=True)
        text = (out.stdout + out.stderr).strip().splitlines()
        versions[name] = next((t.strip() for t in text if t.strip()), "?")
    return {
        "uname": uname,
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **versions,
    }


def best_sustained(steps: list[Step], target: str) -> int:
    ok = [s.rate for s in steps if s.target == target and s.ok]
    return max(ok) if ok else 0


def render(bench: Bench, info: dict[str, str]) -> str:
    args = bench.args
    steps = bench.steps
    lines = [
        SECTION,
        "",
        f"- machine: `{info['uname']}`",
        f"- CPU: {info['cpu']}",
        f"- Python: {info['python']}; {info['kamailio']}; {info['sipp']}",
        f"- date: {info['date']}",
        f"- load: {info['load']}",
        "- command: `python bench/call_setup.py"
        + (f" --rates {args.rates}" if args.rates != DEFAULT_RATES else "")
        + (" --relay harness" if args.relay != "nodelay" else "")
        + (f" --kamailio-shm {args.kamailio_shm}" if args.kamailio_shm != 256 else "")
        + (f" --transport {args.transport}" if args.transport != "udp,tls" else "")
        + "`",
        "",
        "Over UDP: SIPp UAC -(UDP)-> Kamailio -(UDP)-> callee; `voiptwisted/udp` is a second "
        "UA process registered over UDP (`sip:carol@...;transport=udp`, RFC 3261 §18), "
        "answering the same way.  Over TLS: "
        "Path: SIPp UAC -(TCP, one connection)-> socat TLS relay "
        + (
            "(TCP_NODELAY on both sides; the harness's `TlsRelay` leaves Nagle on) "
            if args.relay == "nodelay"
            else "(the harness's `TlsRelay`, Nagle on) "
        )
        + "-(TLS)-> Kamailio 5.6 "
        f"(registrar + record-routing proxy, `-m {args.kamailio_shm}` MB shared memory) "
        "-> callee.  Callee `voiptwisted`: our UA in its own "
        f"process pinned to CPU {args.ua_cpu}, registered over TLS (TCP_NODELAY, as every SIP"
        " flow of ours) with "
        "`voiptwisted.sip.connect.run`, answering at once (100, then 200 with an SDP answer) "
        "with the silent base `Session`: SDP offer/answer and an RTP/RTCP port pair per call "
        "are real, no RTP packets flow (signalling isolated).  Callee `baseline`: SIPp UAS "
        "(`bench/sipp/uas_answer.xml`: 200 at once; no 180 because Kamailio's UDP workers can "
        "deliver a UDP callee's 180 after its 200, which hangs SIPp's UAC) registered over "
        "UDP (SIPp cannot register and serve on one "
        "connection), the "
        "floor of the path.  Kamailio, socat and SIPp are pinned to the other core.  Each call: "
        f"INVITE/100/200/ACK, {args.hold_ms} ms hold, BYE/200.  "
        + (
            "No warm-up (`--no-warm-up`): the first step includes our UA's first call, which "
            "loads the media stack.  "
            if args.no_warm_up
            else f"Before the first step each callee takes {WARM_UP_CALLS} unmeasured calls "
            "(our UA loads its media stack with its first call).  "
        )
        + "Steps of "
        f"{args.step_seconds:g} s (at most {args.max_calls} calls), ours and the baseline "
        "interleaved per rate; a target stops at its first failed step.  A step passes when "
        "SIPp reports every call successful, the UA saw every call and hangup and kept no "
        "dialog/transaction/timer, and calls were answered at >= 90 % of the offered rate.  "
        "INVITE->200: SIPp `-trace_rtt`, every call (SIPp's clock here moves in ~4 ms steps, so "
        "0 means < 4 ms).  CPU/call: process "
        "CPU time (user + system) of the callee process over the step / calls; Kamailio: all "
        "its processes.",
        "",
        "| callee | offered cps | calls | result | answered cps | p50 ms | p99 ms | max ms "
        "| callee CPU/call µs | callee core % | Kamailio CPU/call µs "
        "| Kamailio free shm (min) MB |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in steps:
        lines.append(
            f"| {s.target} | {s.rate} | {s.calls} | {'ok' if s.ok else '**FAIL**'} "
            f"| {s.answered_rate:.1f} | {s.p50_ms:.0f} | {s.p99_ms:.0f} | {s.max_ms:.0f} "
            f"| {s.ua_cpu_per_call_us:.0f} | {s.ua_cpu_per_call_us * s.answered_rate / 1e4:.0f} "
            f"| {s.kamailio_cpu_per_call_us:.0f} "
            f"| {s.shm_free_min / 1e6:.1f} |"
        )
    for transport in bench.transports:
        lines += summary(bench, transport)
    lines += udp_verdict(bench)
    failures = [s for s in steps if not s.ok]
    if failures:
        lines += ["", "Failed steps (what SIPp, our UA and Kamailio said):", ""]
        for s in failures:
            lines.append(f"- {s.target} at {s.rate} cps: cause: {failure_cause(s)}")
            for problem in s.problems:
                lines.append(f"  - `{problem.replace('`', chr(39))}`")
    return "\n".join(lines) + "\n"


def summary(bench: Bench, transport: str) -> list[str]:
    """The sustained rate, latency and CPU lines for one transport."""
    args = bench.args
    steps = bench.steps
    mine_name, base_name = f"voiptwisted/{transport}", f"baseline/{transport}"
    ours = best_sustained(steps, mine_name)
    base = best_sustained(steps, base_name)
    lines = [
        "",
        f"**{transport.upper()}** -- sustained with zero failures: voiptwisted {ours} cps, "
        f"baseline {base} cps (highest passing step; the step above failed or was not run).",
    ]
    tested_max = max((s.rate for s in steps if s.target == mine_name), default=0)
    if ours and ours == tested_max:
        lines[-1] += f"  {ours} cps was the highest rate tried: the limit is above it."
    for rate in (50, 100):
        mine = next((s for s in steps if s.target == mine_name and s.rate == rate), None)
        floor = next((s for s in steps if s.target == base_name and s.rate == rate), None)
        if mine is not None:
            text = (
                f"- INVITE->200 at {rate} cps: voiptwisted p50 {mine.p50_ms:.0f} ms, "
                f"p99 {mine.p99_ms:.0f} ms"
            )
            if floor is not None:
                text += f"; baseline p50 {floor.p50_ms:.0f} ms, p99 {floor.p99_ms:.0f} ms"
            lines.append(text)
    best = next((s for s in steps if s.target == mine_name and s.ok and s.rate == ours), None)
    if best is not None:
        lines.append(
            f"- INVITE->200 at the highest sustained rate ({ours} cps): p50 {best.p50_ms:.0f} "
            f"ms, p99 {best.p99_ms:.0f} ms"
        )
    mean = cpu_per_call(steps, mine_name)
    if mean is not None:
        text = f"- voiptwisted CPU per call (mean over passing steps): {mean:.0f} µs"
        base_mean = cpu_per_call(steps, base_name)
        if base_mean:
            text += f"; SIPp UAS {base_mean:.0f} µs ({mean / base_mean:.1f}x)"
        text += f"; one core's worth at that cost = {1e6 / mean:.0f} calls/s."
        lines.append(text)
    if transport == "tls":
        at100 = next((s for s in steps if s.target == mine_name and s.rate == 100), None)
        p99_ok = at100 is not None and at100.ok and at100.p99_ms < TARGET_P99_MS
        lines += [
            "",
            f"Target >= {TARGET_CPS} cps sustained on one core: {ours} cps "
            f"({'met' if ours >= TARGET_CPS else 'NOT met'}); target p99 INVITE->200 < "
            f"{TARGET_P99_MS:.0f} ms at 100 cps: "
            + (f"{at100.p99_ms:.0f} ms" if at100 is not None else "not measured")
            + f" ({'met' if p99_ok else 'NOT met'}).",
        ]
        if args.relay == "nodelay":
            lines.append(
                "- The harness's `TlsRelay` (socat without `nodelay`) adds Nagle delays to both "
                "callees: with `--relay harness` (2026-11-28, 3 s steps) INVITE->200 was p50 "
                "8-20 ms, p99 48-64 ms at 50 and 100 cps for voiptwisted and the SIPp baseline "
                "alike."
            )
    mine_fail = next((s for s in steps if s.target == mine_name and not s.ok), None)
    floor_fail = next((s for s in steps if s.target == base_name and not s.ok), None)
    if (
        mine_fail is not None
        and floor_fail is not None
        and mine_fail.rate == floor_fail.rate
        and failure_cause(mine_fail) == failure_cause(floor_fail)
    ):
        lines.append(
            f"- At {mine_fail.rate} cps the baseline failed the same way as voiptwisted: the "
            "limit found is the path's (Kamailio as the harness configures it), not our UA's; "
            "our UA used "
            f"{mine_fail.ua_cpu_per_call_us * mine_fail.answered_rate / 1e4:.0f} % of its core "
            "there."
        )
    return lines


def cpu_per_call(steps: list[Step], target: str) -> float | None:
    """Mean callee CPU per call over the passing steps of *target*, or None."""
    passing = [s for s in steps if s.target == target and s.ok and s.successful]
    if not passing:
        return None
    return sum(s.ua_cpu_per_call_us for s in passing) / len(passing)


def udp_verdict(bench: Bench) -> list[str]:
    """Issue 10's UDP targets: >= 800 cps sustained, CPU per call no more than over TLS."""
    if "udp" not in bench.transports:
        return []
    ours = best_sustained(bench.steps, "voiptwisted/udp")
    udp = cpu_per_call(bench.steps, "voiptwisted/udp")
    tls = cpu_per_call(bench.steps, "voiptwisted/tls")
    line = (
        f"Target over UDP >= {TARGET_UDP_CPS} cps sustained: {ours} cps "
        f"({'met' if ours >= TARGET_UDP_CPS else 'NOT met'})"
    )
    if udp is not None and tls is not None:
        line += (
            f"; CPU per call UDP {udp:.0f} µs vs TLS {tls:.0f} µs "
            f"({'met' if udp <= tls else 'NOT met'}: no more than over TLS)"
        )
    return ["", line + "."]


def transports(text: str) -> list[str]:
    """The ``--transport`` list: ``udp``, ``tls`` or both, comma-separated, in that order."""
    chosen = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in ("udp", "tls")]
    if unknown or not chosen:
        raise ValueError(f"--transport takes udp and/or tls, not {text!r}")
    return list(dict.fromkeys(chosen))


def failure_cause(step: Step) -> str:
    """A one-line reading of a failed step's evidence."""
    text = " ".join(step.problems)
    if "#1491" in text and "not enough memory" in text:
        return (
            "Kamailio ran short of shared memory (`--kamailio-shm`); its TLS "
            "low-memory guard (openssl bug #1491 workaround) then failed TLS writes and dropped "
            "TLS connections, so calls in flight on them were lost"
        )
    if "no free RTP port" in text:
        return "our UA found no free RTP port pair in its range (answered 500)"
    if "timed out" in text:
        return "calls stuck until SIPp's global timeout (see SIPp's per-message counts)"
    return "see the evidence below"


def write_section(text: str) -> None:
    """Replace (or append) only the "Call setup" section; re-read the file right before."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(updated.rstrip("\n") + "\n")


DEFAULT_RATES = "50,100,200,300,400,500,600,800"


def main() -> None:
    if "--ua" in sys.argv[1:]:
        ua_main()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rates", default=DEFAULT_RATES, help="offered calls/s, comma-separated")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--max-calls", type=int, default=5000)
    parser.add_argument("--hold-ms", type=int, default=100)
    parser.add_argument("--ua-cpu", type=int, default=1, help="core for our UA")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--no-warm-up",
        action="store_true",
        help=f"skip the {WARM_UP_CALLS} unmeasured calls into each callee before the steps",
    )
    parser.add_argument(
        "--transport",
        default="udp,tls",
        help="transports to measure, comma-separated: udp, tls (default both, same run)",
    )
    parser.add_argument(
        "--relay",
        choices=("harness", "nodelay"),
        default="nodelay",
        help="TLS relay for SIPp: socat with TCP_NODELAY (default), or the harness's TlsRelay",
    )
    parser.add_argument(
        "--kamailio-shm",
        type=int,
        default=256,
        help="Kamailio's shared memory in MB (the tests' 64 MB runs short near 400 calls/s)",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    try:
        transports(args.transport)
    except ValueError as e:
        parser.error(str(e))
    cores = sorted(os.sched_getaffinity(0))
    if args.ua_cpu not in cores:
        parser.error(f"--ua-cpu {args.ua_cpu} not in {cores}")
    others = set(cores) - {args.ua_cpu}
    if others:
        os.sched_setaffinity(0, others)  # peers started from here inherit it
    missing = [name for name in ("kamailio", "sipp", "socat") if shutil.which(name) is None]
    if missing:
        sys.exit(f"not installed: {', '.join(missing)}; run `bash scripts/install-deps.sh`")
    load_before = os.getloadavg()
    bench = Bench(args)
    try:
        bench.start()
        bench.run()
    finally:
        bench.stop()
    info = machine()
    load_after = os.getloadavg()
    info["load"] = (
        f"{load_before[0]:.2f} at start, {load_after[0]:.2f} at end (1-min load average; "
        "other engineers' tests and benchmarks share this machine)"
    )
    text = render(bench, info)
    print()
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
