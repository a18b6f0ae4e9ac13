"""Memory of ``twistd voip``: registered and idle, then with 100 active echo calls.

Run ``python bench/service_memory.py`` from the repository root (about a minute).

1. Kamailio (from ``tests/integration/peers.py``) on 127.0.0.1; ``twistd -n voip --aor
   sip:alice@127.0.0.1:PORT --listen tcp:PORT2`` registers over TLS (and listens for
   direct calls); once Kamailio holds the binding and 3 s have passed, ``VmRSS`` of the
   twistd process is the *idle* figure.
2. One warm-up echo call (SIPp ``uac_g711a``, 2 s): numpy, pylibsrtp and the codec
   tables load with the first call (not at start-up), so ``VmRSS`` after it, the
   *warm* figure, is what the call machinery costs once.
3. SIPp (``uac_g711a``: PCMA RTP from SIPp's g711a.pcap on every call) opens ``--calls``
   echo calls over one TCP connection straight to ``--listen``, 50 calls/s, each held
   ``--hold`` seconds.  When the service logged every call answered, 3 s later (media
   flowing both ways), ``VmRSS`` is sampled again: (active - warm) / calls is the
   per-call figure.
4. After SIPp hung up every call, ``VmRSS`` once more shows what is not given back.

Targets (issue 6): <= 60 MB idle, <= 50 KB per active call.  Results are printed and
written to the "Service memory" section of ``bench/RESULTS.md`` (``--no-write`` to skip).
Loopback only; every process started here is stopped here by its own handle; every
wait has a timeout.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## Service memory"
IDLE_TARGET_MB = 60.0
PER_CALL_TARGET_KB = 50.0

sys.path.insert(0, str(ROOT))

from tests.integration.peers import Kamailio, Sipp, free_port, wait_until  # noqa: E402


def rss_kb(pid: int) -> int:
    """Resident set size of *pid* in KiB (``VmRSS`` from /proc)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    if match is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return int(match.group(1))


def smaps_kb(pid: int) -> tuple[int, int]:
    """(Pss, Private_Clean + Private_Dirty) of *pid* in KiB: RSS without shared libraries."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    fields = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


_START = (
    "import twisted.internet.reactor, twisted.scripts.twistd, twisted.internet.ssl, "
    "voiptwisted.tap, voiptwisted.service, voiptwisted.apps, voiptwisted.media.call"
)
BASELINES = {
    "python": "pass",
    "Twisted epoll reactor (pulls in pyOpenSSL/cryptography)": "import twisted.internet.reactor",
    "+ twistd, voiptwisted.tap and what the service imports at start-up": _START,
    "+ what the first call loads (numpy, pylibsrtp, negotiation, RTP, sessions)": _START
    + ", voiptwisted.sdp.negotiation, voiptwisted.rtp.srtp, voiptwisted.media.session,"
    " voiptwisted.codecs.g711\n"
    "import pylibsrtp, numpy",
}


def baselines() -> dict[str, int]:
    """VmRSS (KiB) of a fresh interpreter after each import line: where the idle RSS goes."""
    found = {}
    for name, code in BASELINES.items():
        probe = (
            f"{code}\nimport re\n"
            "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             env=env, timeout=60, check=True)
        found[name] = int(out.stdout.strip())
    return found


def measure(calls: int, hold: float, workdir: Path) -> dict[str, float]:
    kam = Kamailio(workdir / "kam", users={"alice": "bench-pw", "bob": "x"})
    kam.start()
    twistd = Path(sys.executable).with_name("twistd")
    listen_port = free_port()
    base = random.randrange(20000, 50000, 1000)
    host, tls_port = kam.address("tls")
    password = workdir / "password"
    password.write_text("bench-pw")
    log_path = workdir / "twistd.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("SIP_PASSWORD", None)
    argv = [
        str(twistd), "-n", "--pidfile=", "voip",
        "--aor", f"sip:alice@{host}:{tls_port}", "--ca-file", str(kam.ca_cert),
        "--password-file", str(password), "--state-dir", str(workdir / "state"),
        "--listen", f"tcp:{listen_port}:interface=127.0.0.1",
        "--rtp-ports", f"{base}-{base + 4 * calls + 100}",
    ]  # fmt: skip
    sipp = None
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(workdir),
            start_new_session=True,
        )  # fmt: skip
        try:
            kam.wait_for_bindings("alice", 1, timeout=30)
            time.sleep(3)
            idle = rss_kb(proc.pid)
            idle_pss, idle_private = smaps_kb(proc.pid)
            warmup = Sipp(
                "uac_g711a", ("127.0.0.1", listen_port), transport="t1", service="echo",
                calls=1, rate=1, duration_ms=2000, timeout=60, tmpdir=workdir / "warmup",
            )  # fmt: skip
            try:
                warmup.start()
                warm_result = warmup.wait(60)
            finally:
                warmup.cleanup()
            if warm_result.successful != 1:
                raise RuntimeError("the warm-up call failed")
            time.sleep(2)
            warm = rss_kb(proc.pid)
            sipp = Sipp(
                "uac_g711a", ("127.0.0.1", listen_port), transport="t1", service="echo",
                calls=calls, rate=50, duration_ms=int(hold * 1000), timeout=int(hold + 60),
                tmpdir=workdir / "sipp",
            )  # fmt: skip
            sipp.start()

            def answered() -> bool:
                text = log_path.read_text(errors="replace")
                return text.count("answering with EchoSession") >= calls + 1

            wait_until(answered, 60, 0.2, f"{calls} answered calls")
            time.sleep(3)
            active = rss_kb(proc.pid)
            result = sipp.wait(hold + 60)
            time.sleep(2)
            after = rss_kb(proc.pid)
        finally:
            if sipp is not None:
                sipp.cleanup()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            kam.cleanup()
    text = log_path.read_text(errors="replace")
    return {
        "idle_kb": idle,
        "idle_pss_kb": idle_pss,
        "idle_private_kb": idle_private,
        "warm_kb": warm,
        "active_kb": active,
        "after_kb": after,
        "per_call_kb": (active - warm) / calls,
        "calls": calls,
        "successful": result.successful,
        "failed": result.failed,
        "tracebacks": text.count("Traceback"),
    }


def report(r: dict[str, float]) -> str:
    idle_mb = r["idle_kb"] / 1024
    uname = platform.uname()
    lines = [
        SECTION,
        "",
        f"- machine: `{uname.system} {uname.node} {uname.release} {uname.machine}`, "
        f"{os.cpu_count()} cores",
        f"- Python: {platform.python_implementation()} {platform.python_version()}",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        "- method: `python bench/service_memory.py`: `twistd -n voip` registered with Kamailio "
        "over TLS; SIPp `uac_g711a` echo calls (PCMA RTP both ways) over TCP straight to "
        "`--listen`; VmRSS of the twistd process",
        "",
        "| measure | value | target |",
        "|---|---:|---:|",
        f"| registered, idle | {idle_mb:.1f} MB | <= {IDLE_TARGET_MB:.0f} MB "
        f"({'met' if idle_mb <= IDLE_TARGET_MB else 'NOT met'}) |",
        f"| after one echo call (call machinery loaded once) | {r['warm_kb'] / 1024:.1f} MB | |",
        f"| with {r['calls']} active echo calls | {r['active_kb'] / 1024:.1f} MB | |",
        f"| per active call (active - after one call) | {r['per_call_kb']:.1f} KB "
        f"| <= {PER_CALL_TARGET_KB:.0f} KB "
        f"({'met' if r['per_call_kb'] <= PER_CALL_TARGET_KB else 'NOT met'}) |",
        f"| after every call ended | {r['after_kb'] / 1024:.1f} MB | |",
        f"| idle PSS / private (shared libraries not counted in full) | "
        f"{r['idle_pss_kb'] / 1024:.1f} MB / {r['idle_private_kb'] / 1024:.1f} MB | |",
        "",
        "Where the idle RSS goes (VmRSS of a fresh interpreter after the import):",
        "",
        *[f"- {name}: {kb / 1024:.1f} MB" for name, kb in r["baselines"].items()],
        "",
        f"SIPp: {r['successful']} calls successful, {r['failed']} failed; "
        f"{r['tracebacks']} tracebacks in the service log.",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Replace (or append) only our section; other sections belong to other benchmarks."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(updated.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--hold", type=float, default=15.0, help="seconds each call lasts")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.calls <= 500:
        parser.error("--calls must be between 1 and 500")
    workdir = Path(tempfile.mkdtemp(prefix="service-memory-"))
    try:
        r = measure(args.calls, args.hold, workdir)
        r["baselines"] = baselines()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(r)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
