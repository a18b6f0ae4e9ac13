"""Scale-out behind Kamailio's dispatcher, 1 vs 2 instances: ``python bench/scale_out.py``.

What runs (all on 127.0.0.1, every process started here and stopped by its PID):

* Kamailio with ``deploy/kamailio/dispatcher.cfg`` (round-robin, OPTIONS probing).
* 1, then 2 ``twistd voip --listen tcp:... --app echo --metrics ...`` instances, instance *i*
  pinned to core *i* (``os.sched_setaffinity``).
* SIPp (``tests/integration/sipp/uac_call.xml`` over UDP to Kamailio), stepped through
  ``--rates`` calls per second, each step ``--step-seconds`` long with calls held
  ``--hold`` seconds.  A step is sustained when every call succeeded.  SIPp sends no RTP in
  this scenario (a SIPp pcap player per call would be the bottleneck on this machine), so
  the figure is signalling + SDP + RTP port pairs per call: the per-instance work the
  dispatcher spreads.

Also measured: Kamailio's CPU (all its processes) during the highest sustained step of each
configuration, and the cost of the metrics endpoint: the instance's CPU time for 200
scrapes during load, scaled to one scrape every 15 s, as a share of the instance's CPU.

**This machine has 2 cores**: with 2 instances, each instance shares its core with SIPp,
Kamailio and whatever else runs, so the 2-instance figure is bounded by the load generator
and the balancer, not by voiptwisted; the ratio measured here is a floor, not the scaling a
machine with a core per instance (and the balancer and load generator elsewhere) would show.
Results go to the "Scale out" section of ``bench/RESULTS.md`` (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.peers import ManagedProcess, Sipp, free_port, wait_until  # noqa: E402
from tests.integration.test_dispatcher import CONFIG, Instance  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Scale out"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of *pid* (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    found = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # a process that just ended
            total += cpu_seconds(pid)
    return total


def scrape(instance: Instance) -> None:
    url = f"http://127.0.0.1:{instance.metrics_port}/"
    with urllib.request.urlopen(url, timeout=5) as response:
        response.read()


def run_configuration(count: int, args: Any, workdir: Path) -> dict[str, Any]:
    """Start *count* instances behind Kamailio and step the offered rate."""
    base = workdir / f"n{count}"
    base.mkdir()
    instances = [Instance(base, f"i{i}", 30000 + 4000 * i) for i in range(count)]
    kamailio = None
    try:
        for i, instance in enumerate(instances):
            instance.ready()
            os.sched_setaffinity(instance.process.proc.pid, {i % os.cpu_count()})
        ds_list = base / "dispatcher.list"
        ds_list.write_text("".join(
            f"1 sip:127.0.0.1:{i.port};transport=tcp 0 0\n" for i in instances))
        sip_port = free_port("udp")
        kamailio = ManagedProcess([
            "kamailio", "-DD", "-E", "-f", str(CONFIG), "-Y", str(base),
            "-A", f"SIP_PORT={sip_port}", "-A", f'DS_LIST="{ds_list}"',
        ], base / "kamailio.log")
        kamailio.start()
        for instance in instances:
            wait_until(lambda i=instance: i.metrics().get(
                'voip_sip_requests_total{direction="in",method="OPTIONS"}', 0) > 0,
                15, 0.2, what="dispatcher probe")
        kamailio_pids = children(kamailio.pid)
        steps = []
        for rate in args.rates:
            calls = int(rate * args.step_seconds)
            agent = Sipp("uac_call", ("127.0.0.1", sip_port), service="echo", calls=calls,
                         rate=rate, duration_ms=int(args.hold * 1000), timeout=120,
                         tmpdir=str(base), extra_args=["-l", str(int(rate * args.hold * 3))])
            cpu_before = [cpu_seconds(i.process.proc.pid) for i in instances]
            kamailio_before = tree_cpu(kamailio_pids)
            started = time.monotonic()
            agent.start()
            result = agent.wait(args.step_seconds + args.hold + 60)
            elapsed = time.monotonic() - started
            cpu = [cpu_seconds(i.process.proc.pid) - b for i, b in zip(instances, cpu_before,
                                                                      strict=True)]
            step = {
                "rate": rate, "calls": calls, "ok": result.successful,
                "failed": result.failed, "sustained": result.ok and result.successful == calls,
                "elapsed": elapsed, "instance_cpu": cpu,
                "kamailio_cpu": tree_cpu(kamailio_pids) - kamailio_before,
            }
            agent.cleanup()
            steps.append(step)
            print(f"{count} instance(s), {rate} cps: {step}", flush=True)
            if not step["sustained"]:
                break
        # Metrics cost: 200 scrapes while a moderate load runs on instance 0.
        agent = Sipp("uac_call", ("127.0.0.1", sip_port), service="echo",
                     calls=int(args.rates[0] * 20), rate=args.rates[0],
                     duration_ms=int(args.hold * 1000), timeout=120, tmpdir=str(base))
        agent.start()
        time.sleep(2)  # bench only: let the load reach its steady state before measuring
        pid = instances[0].process.proc.pid
        before, t0 = cpu_seconds(pid), time.monotonic()
        for _ in range(200):
            scrape(instances[0])
        scrape_cpu = (cpu_seconds(pid) - before) / 200
        window = time.monotonic() - t0
        agent.wait(200)
        agent.cleanup()
        return {"count": count, "steps": steps, "scrape_cpu": scrape_cpu,
                "scrape_window": window}
    finally:
        if kamailio is not None:
            kamailio.stop()
        for instance in instances:
            instance.process.stop()


def best(result: dict[str, Any]) -> dict[str, Any] | None:
    sustained = [s for s in result["steps"] if s["sustained"]]
    return sustained[-1] if sustained else None


def report(results: list[dict[str, Any]], args: Any) -> str:
    lines = [
        SECTION, "",
        f"- machine: `{platform.platform()}`, {os.cpu_count()} cores",
        f"- Python: {platform.python_implementation()} {platform.python_version()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- method: `python bench/scale_out.py`: SIPp `uac_call` over UDP -> Kamailio "
        f"`deploy/kamailio/dispatcher.cfg` (round-robin) -> N `twistd voip --app echo` over "
        f"TCP, instance i pinned to core i; steps of {args.step_seconds:g} s at "
        f"{', '.join(map(str, args.rates))} cps, calls held {args.hold:g} s; sustained = "
        f"every call succeeded",
        "",
        "| instances | highest sustained cps | calls up at once (cps x hold) | instance CPU "
        "per call | each instance's CPU | Kamailio CPU | first failed step |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    peaks = {}
    for result in results:
        top = best(result)
        failed = [s for s in result["steps"] if not s["sustained"]]
        fail_text = (f"{failed[0]['rate']} cps: {failed[0]['failed']} failed"
                     if failed else "none (ladder ended)")
        if top is None:
            lines.append(f"| {result['count']} | 0 | 0 | - | - | - | {fail_text} |")
            continue
        peaks[result["count"]] = top["rate"]
        per_call = sum(top["instance_cpu"]) / max(top["calls"], 1)
        kam = top["kamailio_cpu"] / top["elapsed"]
        each = ", ".join(f"{c / top['elapsed'] * 100:.0f} %" for c in top["instance_cpu"])
        lines.append(
            f"| {result['count']} | {top['rate']} | {top['rate'] * args.hold:.0f} | "
            f"{per_call * 1000:.2f} ms | {each} of a core | {kam * 100:.0f} % of a core | "
            f"{fail_text} |")
    if 1 in peaks and 2 in peaks:
        ended = all(s["sustained"] for s in results[1]["steps"])
        bound = ">= " if ended else ""
        lines += ["", f"2 instances / 1 instance: {bound}{peaks[2] / peaks[1]:.2f}x (target "
                  f">= 1.8x){' (the ladder ended before 2 instances failed)' if ended else ''}."]
    scrape = results[0]["scrape_cpu"]
    top1 = best(results[0])
    if top1 is not None:
        busy = sum(top1["instance_cpu"]) / top1["elapsed"]
        share = (scrape / 15.0) / busy if busy else 0.0
        lines += ["", f"Metrics endpoint: {scrape * 1000:.2f} ms of instance CPU per scrape "
                  f"under load; at one scrape every 15 s that is {share * 100:.3f} % of the "
                  f"instance's CPU at its highest sustained step (target < 2 %)."]
    lines += ["", "This machine has 2 cores shared by SIPp, Kamailio and the instances: with "
              "2 instances each one shares its core with the load generator and the balancer, "
              "so the 2-instance figure measures the machine, not voiptwisted's scaling; "
              "instances share nothing (each has its own process, ports and dialogs), so on a "
              "core per instance the work spreads as the dispatcher spreads calls (35-65 % each "
              "in tests/integration/test_dispatcher.py)."]
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--rates", type=lambda v: [int(x) for x in v.split(",")],
                        default=[25, 50, 100, 150, 200, 300])
    parser.add_argument("--step-seconds", type=float, default=8.0)
    parser.add_argument("--hold", type=float, default=2.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    subprocess.run(["kamailio", "-v"], check=True, capture_output=True)
    workdir = Path(tempfile.mkdtemp(prefix="scale-out-"))
    try:
        results = [run_configuration(n, args, workdir) for n in (1, 2)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, args)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
