"""Scale-out behind Kamailio's dispatcher, 1 vs 2 instances, with RTP: `bench/scale_out.py`.

What runs (all on 127.0.0.1, every process started here and stopped by its PID):

* Kamailio with ``deploy/kamailio/dispatcher.cfg`` (round-robin, OPTIONS probing).
* 1, then 2 ``twistd voip --listen tcp:... --metrics ...`` echo instances; with 2 or more
  cores instance *i* is pinned to core *i* (``taskset -a -p``: every thread of it).
* SIPp over UDP to Kamailio; every call streams PCMA RTP (``rtp_stream``, 20 ms packets,
  the scenario of ``tests/integration/test_dispatcher.py``) that the echo sends back.

The same offered load goes to each configuration, in one run:

* **concurrent calls**: steps of ``--concurrent`` calls, each streaming ``--hold`` seconds of
  RTP, placed at ``--ramp-cps`` so that they are all up at once; a step is held when every
  call succeeded and the instances lost < 0.1 % of the RTP packets SIPp sent them (RFC 3550
  §A.3 loss, from the instances' ``voip_rtp_packets_*`` counters before and after the step).
  "Peak up" is the most calls SIPp had up at once (its ``CurrentCall`` statistic).  Loss is
  counted in the direction SIPp -> instance only: SIPp keeps no per-packet count of the
  echo it receives.
* **calls per second**: steps of ``--rates`` cps for ``--step-seconds`` each, every call with
  ``--call-rtp`` seconds of RTP; a step is sustained when no call failed.

Each ladder stops at its first step that fails.  Kamailio's CPU (all its processes) and
SIPp's are given for the highest passing step of each ladder.

**Metrics cost**: on the first configuration (1 instance) the same ``--scrape-calls``
echo calls run twice, without scrapes and then with the endpoint scraped every
``--scrape-interval`` seconds (1 s: 15 times Prometheus' default rate); the instance's
CPU of both runs is compared, and the CPU of 100 back-to-back scrapes under that load
gives the cost per scrape.

On a 2-core machine SIPp and Kamailio share the cores with the instances: the 2-instance
figures are bounded by the machine, not by voiptwisted.  ``--quick`` is a smoke run (tiny
steps, nothing written).  Results go to the "Scale out" section of ``bench/RESULTS.md``
(``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.peers import (  # noqa: E402
    ManagedProcess,
    PeerError,
    Sipp,
    free_port,
    wait_until,
)
from tests.integration.test_dispatcher import (  # noqa: E402
    CALLEE,
    CONFIG,
    LOST,
    RECEIVED,
    Instance,
    rtp_scenario,
)

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Scale out"
TICKS = os.sysconf("SC_CLK_TCK")
#: Loss a concurrent-calls step may show and still count as held (0.1 %).
MAX_LOSS = 0.001
#: RTP ports per instance (2 per call): room for 2000 calls.
RTP_SPAN = 4000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of *pid* (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    """*pid* and its direct children (Kamailio's workers are forked by its main process)."""
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


def peak_calls(agent: Sipp) -> int:
    """The most calls SIPp had up at once (max ``CurrentCall`` over its periodic rows)."""
    try:
        with open(agent.stat_path, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter=";"))
    except FileNotFoundError:
        return 0
    return max((int(r.get("CurrentCall") or 0) for r in rows), default=0)


class Configuration:
    """Kamailio in front of *count* pinned echo instances, and what a step of load cost."""

    def __init__(self, count: int, workdir: Path):
        self.count = count
        self.dir = workdir / f"n{count}"
        self.dir.mkdir()
        self.instances: list[Instance] = []
        self.kamailio: ManagedProcess | None = None

    def start(self) -> None:
        cores = os.cpu_count() or 1
        for i in range(self.count):
            base = 40000 + (RTP_SPAN + 2) * i
            self.instances.append(Instance(self.dir, f"i{i}", base, rtp_span=RTP_SPAN))
        for i, instance in enumerate(self.instances):
            instance.ready()
            if cores >= 2:
                subprocess.run(["taskset", "-a", "-p", "-c", str(i % cores),
                                str(instance.process.proc.pid)], check=True,
                               capture_output=True)
        ds_list = self.dir / "dispatcher.list"
        ds_list.write_text("".join(
            f"1 sip:127.0.0.1:{i.port};transport=tcp 0 0\n" for i in self.instances))
        self.sip_port = free_port("udp")
        self.kamailio = ManagedProcess([
            "kamailio", "-DD", "-E", "-f", str(CONFIG), "-Y", str(self.dir),
            "-A", f"SIP_PORT={self.sip_port}", "-A", f'DS_LIST="{ds_list}"',
        ], self.dir / "kamailio.log")
        self.kamailio.start()
        for instance in self.instances:
            wait_until(lambda i=instance: i.metrics().get(
                'voip_sip_requests_total{direction="in",method="OPTIONS"}', 0) > 0,
                15, 0.2, what="dispatcher probe")
        self.kamailio_pids = children(self.kamailio.pid)

    def stop(self) -> None:
        if self.kamailio is not None:
            self.kamailio.stop()
        for instance in self.instances:
            instance.process.stop()

    def rtp_counters(self) -> tuple[float, float]:
        """(received, lost) RTP packets summed over the instances."""
        received = lost = 0.0
        for instance in self.instances:
            found = instance.metrics()
            received += found.get(RECEIVED, 0.0)
            lost += found.get(LOST, 0.0)
        return received, lost

    def step(self, calls: int, rate: float, rtp_seconds: float, scrape_every: float = 0.0
             ) -> dict[str, Any]:
        """Place *calls* echo calls with *rtp_seconds* of RTP each at *rate* cps; what it
        cost.  With *scrape_every* > 0 instance 0's metrics are scraped that often."""
        scenario = rtp_scenario(self.dir, f"rtp{rtp_seconds:g}", rtp_seconds)
        offered = calls / rate + rtp_seconds
        agent = Sipp(scenario, ("127.0.0.1", self.sip_port), service=CALLEE, calls=calls,
                     rate=rate, extra_args=["-l", str(calls)], tmpdir=str(self.dir),
                     timeout=offered + 60)
        received0, lost0 = self.rtp_counters()
        pids = [i.process.proc.pid for i in self.instances]
        instance0 = [cpu_seconds(pid) for pid in pids]
        kamailio0 = tree_cpu(self.kamailio_pids)
        done = threading.Event()
        scrapes = 0

        def scraper() -> None:
            nonlocal scrapes
            while not done.wait(scrape_every):
                scrape(self.instances[0])
                scrapes += 1

        started = time.monotonic()
        agent.start()
        sipp_pid = agent._proc.pid  # the bench reads SIPp's CPU
        sipp0 = cpu_seconds(sipp_pid)
        sipp_cpu = 0.0
        thread = None
        if scrape_every > 0:
            thread = threading.Thread(target=scraper, daemon=True)
            thread.start()
        try:
            while agent.running:
                with contextlib.suppress(OSError):
                    sipp_cpu = cpu_seconds(sipp_pid) - sipp0
                time.sleep(0.2)  # bench only: sampling SIPp's CPU while it runs
            result = agent.wait(offered + 90)
        finally:
            done.set()
            if thread is not None:
                thread.join()
        elapsed = time.monotonic() - started
        # A call the instance still holds (one SIPp failed) would count on: wait for none.
        with contextlib.suppress(PeerError):
            wait_until(lambda: all(i.active() == 0 for i in self.instances), 30, 0.2)
        received1, lost1 = self.rtp_counters()
        received, lost = received1 - received0, lost1 - lost0
        expected = received + lost
        outcome = {
            "calls": calls, "rate": rate, "rtp_seconds": rtp_seconds,
            "ok": result.successful, "failed": result.failed,
            "all_ok": result.returncode == 0 and result.successful == calls,
            "peak": peak_calls(agent), "elapsed": elapsed,
            "received": received, "lost": lost,
            "loss": lost / expected if expected else 1.0,
            "instance_cpu": [cpu_seconds(p) - c for p, c in zip(pids, instance0, strict=True)],
            "kamailio_cpu": tree_cpu(self.kamailio_pids) - kamailio0,
            "sipp_cpu": sipp_cpu, "scrapes": scrapes, "why": _first_error(result.errors),
        }
        agent.cleanup()
        return outcome

    def scrape_cost(self, calls: int, rate: float, rtp_seconds: float, scrapes: int = 100
                    ) -> float:
        """Instance 0's CPU seconds per scrape, from *scrapes* back-to-back scrapes while
        *calls* echo calls run."""
        scenario = rtp_scenario(self.dir, f"rtp{rtp_seconds:g}", rtp_seconds)
        agent = Sipp(scenario, ("127.0.0.1", self.sip_port), service=CALLEE, calls=calls,
                     rate=rate, extra_args=["-l", str(calls)], tmpdir=str(self.dir),
                     timeout=calls / rate + rtp_seconds + 60)
        agent.start()
        instance = self.instances[0]
        wait_until(lambda: instance.active() >= min(calls, rate), 30, 0.2, what="calls up")
        pid = instance.process.proc.pid
        idle = cpu_seconds(pid)
        time.sleep(1.0)  # bench only: the instance's CPU per second under this load
        base_rate = cpu_seconds(pid) - idle
        before, t0 = cpu_seconds(pid), time.monotonic()
        for _ in range(scrapes):
            scrape(instance)
        window = time.monotonic() - t0
        spent = cpu_seconds(pid) - before - base_rate * window
        agent.wait(calls / rate + rtp_seconds + 90)
        agent.cleanup()
        return max(spent, 0.0) / scrapes


def ladder(config: Configuration, args: Any) -> dict[str, Any]:
    """Both ladders on one configuration."""
    concurrent = []
    for calls in args.concurrent:
        step = config.step(calls, args.ramp_cps, args.hold)
        step["held"] = step["all_ok"] and step["loss"] < MAX_LOSS
        concurrent.append(step)
        print(f"{config.count} instance(s), {calls} concurrent: {_brief(step)}", flush=True)
        if not step["held"]:
            break
    rates = []
    for rate in args.rates:
        step = config.step(int(rate * args.step_seconds), rate, args.call_rtp)
        step["held"] = step["all_ok"]
        rates.append(step)
        print(f"{config.count} instance(s), {rate} cps: {_brief(step)}", flush=True)
        if not step["held"]:
            break
    return {"count": config.count, "concurrent": concurrent, "rates": rates}


def metrics_cost(config: Configuration, args: Any) -> dict[str, Any]:
    calls, rate, seconds = args.scrape_calls, args.ramp_cps, args.hold
    quiet = config.step(calls, rate, seconds)
    scraped = config.step(calls, rate, seconds, scrape_every=args.scrape_interval)
    per_scrape = config.scrape_cost(calls, rate, seconds)
    return {"quiet": quiet, "scraped": scraped, "per_scrape": per_scrape,
            "count": config.count}


def _first_error(errors: str) -> str:
    """What SIPp said about the first call it failed, in a few words, or ""."""
    match = re.search(r"Aborting call on unexpected message[^:]*: (while expecting '\w+' "
                      r"\(index \d+\)), received '([^\r\n']*)", errors)
    if match:
        return f"{match.group(1)} got {match.group(2)}"
    match = re.search(r"[^\n']*(?:timed out|timeout)[^\n']{0,120}", errors, re.I)
    return match.group(0).strip() if match else ""


def _brief(step: dict[str, Any]) -> str:
    cpu = ", ".join(f"{c:.1f}" for c in step["instance_cpu"])
    return (f"ok={step['ok']} failed={step['failed']} peak={step['peak']} "
            f"loss={step['loss'] * 100:.3f}% ({step['lost']:.0f}/{step['received']:.0f}) "
            f"instance cpu s=[{cpu}] kamailio={step['kamailio_cpu']:.1f}s "
            f"sipp={step['sipp_cpu']:.1f}s in {step['elapsed']:.1f}s"
            + (f" first failure: {step['why']}" if step["failed"] else ""))


def _top(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    held = [s for s in steps if s["held"]]
    return held[-1] if held else None


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.3f} %"


def _share(seconds: float, step: dict[str, Any]) -> str:
    return f"{seconds / step['elapsed'] * 100:.0f} %"


def report(results: list[dict[str, Any]], cost: dict[str, Any], args: Any) -> str:
    lines = [
        SECTION, "",
        f"- machine: `{platform.platform()}`, {os.cpu_count()} cores; 1-min load average "
        f"before the run {args.load_before:.1f}",
        f"- Python: {platform.python_implementation()} {platform.python_version()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- method: `python bench/scale_out.py {' '.join(args.argv)}`: SIPp over UDP (PCMA "
        f"`rtp_stream`, 20 ms packets, echoed back) -> Kamailio "
        f"`deploy/kamailio/dispatcher.cfg` (round-robin) -> N `twistd voip` echo instances "
        f"over TCP, instance i pinned to core i (`taskset`); concurrent steps "
        f"{', '.join(map(str, args.concurrent))} calls x {args.hold:g} s of RTP placed at "
        f"{args.ramp_cps:g} cps; cps steps {', '.join(map(str, args.rates))} for "
        f"{args.step_seconds:g} s, {args.call_rtp:g} s of RTP per call",
        "",
        "| instances | concurrent calls held (< 0.1 % loss, 0 failed) | peak up | loss | "
        "cps sustained (0 failed) | instance CPU (of the elapsed time), concurrent / cps | "
        "Kamailio CPU, concurrent / cps | SIPp CPU, concurrent / cps | first failing steps |",
        "|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    tops: dict[int, tuple[int, float]] = {}
    for result in results:
        held, fast = _top(result["concurrent"]), _top(result["rates"])
        failing = [f"{s['calls']} calls: {s['failed']} failed, loss {s['loss'] * 100:.3f} %"
                   + (f" (first: {s['why']})" if s["why"] else "")
                   for s in result["concurrent"] if not s["held"]]
        failing += [f"{s['rate']:g} cps: {s['failed']} failed"
                    + (f" (first: {s['why']})" if s["why"] else "")
                    for s in result["rates"] if not s["held"]]

        def cells(step: dict[str, Any] | None, key: str) -> str:
            if step is None:
                return "-"
            if key == "instance_cpu":
                return ", ".join(_share(c, step) for c in step[key])
            return _share(step[key], step)

        tops[result["count"]] = (held["calls"] if held else 0, fast["rate"] if fast else 0)
        lines.append(
            f"| {result['count']} | {held['calls'] if held else 0} | "
            f"{held['peak'] if held else '-'} | "
            f"{_percent(held['loss']) if held else '-'} | "
            f"{fast['rate'] if fast else 0:g} | "
            f"{cells(held, 'instance_cpu')} / {cells(fast, 'instance_cpu')} | "
            f"{cells(held, 'kamailio_cpu')} / {cells(fast, 'kamailio_cpu')} | "
            f"{cells(held, 'sipp_cpu')} / {cells(fast, 'sipp_cpu')} | "
            f"{'; '.join(failing) or 'none (ladder ended)'} |")
    if 1 in tops and 2 in tops and all(tops[1]):
        lines += ["", f"2 instances / 1 instance: {tops[2][0] / tops[1][0]:.2f}x concurrent "
                  f"calls, {tops[2][1] / tops[1][1]:.2f}x cps (target >= 1.8x; a ladder that "
                  f"ended without failing gives a lower bound)."]
    quiet, scraped, per_scrape = cost["quiet"], cost["scraped"], cost["per_scrape"]
    busy = quiet["instance_cpu"][0] / quiet["elapsed"]
    with_scrapes = scraped["instance_cpu"][0] / scraped["elapsed"]
    at_15 = per_scrape / 15.0 / busy if busy else 0.0
    at_1 = per_scrape / args.scrape_interval / busy if busy else 0.0
    lines += ["", f"Metrics endpoint, {cost['count']} instance(s), instance 0 scraped, "
              f"{args.scrape_calls} echo calls x "
              f"{args.hold:g} s: instance CPU {busy * 100:.1f} % of a core without scrapes, "
              f"{with_scrapes * 100:.1f} % with a scrape every {args.scrape_interval:g} s "
              f"({scraped['scrapes']} scrapes; the difference is within run-to-run noise "
              f"unless it exceeds the next figure); {per_scrape * 1000:.2f} ms of instance CPU "
              f"per scrape (100 back-to-back scrapes under that load), i.e. "
              f"{at_1 * 100:.2f} % of the instance's CPU at one scrape per "
              f"{args.scrape_interval:g} s and {at_15 * 100:.3f} % at Prometheus' default "
              f"15 s (target < 2 %)."]
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


def _numbers(kind: type) -> Any:
    return lambda value: [kind(x) for x in value.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=_numbers(int),
                        default=[50, 100, 200, 300, 400, 500, 600, 800])
    parser.add_argument("--hold", type=float, default=10.0,
                        help="seconds of RTP per call of a concurrent step")
    parser.add_argument("--ramp-cps", type=float, default=50.0)
    parser.add_argument("--rates", type=_numbers(float),
                        default=[25, 50, 100, 150, 200, 300, 400])
    parser.add_argument("--step-seconds", type=float, default=8.0)
    parser.add_argument("--call-rtp", type=float, default=1.0,
                        help="seconds of RTP per call of a cps step")
    parser.add_argument("--scrape-calls", type=int, default=100)
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    parser.add_argument("--instances", type=_numbers(int), default=[1, 2],
                        help="configurations to measure (instances behind Kamailio)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny steps, nothing written")
    parser.add_argument("--no-write", action="store_true")
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.concurrent, args.hold, args.ramp_cps = [10, 20], 2.0, 20.0
        args.rates, args.step_seconds, args.call_rtp = [10, 20], 2.0, 0.5
        args.scrape_calls, args.no_write = 10, True
    subprocess.run(["kamailio", "-v"], check=True, capture_output=True)
    args.load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="scale-out-"))
    results, cost = [], None
    try:
        for count in args.instances:
            config = Configuration(count, workdir)
            try:
                config.start()
                results.append(ladder(config, args))
                if cost is None:
                    cost = metrics_cost(config, args)
            finally:
                config.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, cost, args)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
