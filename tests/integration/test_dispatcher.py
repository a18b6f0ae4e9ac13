"""Instances behind Kamailio's dispatcher (issue 15): spread, failover, drain, metrics, CDR.

Kamailio runs deploy/kamailio/dispatcher.cfg itself (its defines set with ``-A``) in front
of two ``twistd voip --listen tcp:...`` echo instances; SIPp calls through it over UDP.
Everything is on 127.0.0.1 with ports picked at run time, started and stopped by PID.
The tests wait on events (SIPp exiting, log lines, metrics values), never on sleeps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration import peers
from tests.integration.peers import ManagedProcess, Sipp, free_port, free_ports, wait_until
from tests.integration.test_twistd import Twistd

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "kamailio" / "dispatcher.cfg"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


class Instance:
    """One ``twistd voip`` echo instance listening on TCP, with --metrics and --cdr."""

    def __init__(self, workdir: Path, name: str, rtp_base: int, drain_timeout: int = 0):
        self.dir = workdir / name
        self.dir.mkdir()
        self.port, self.metrics_port = free_ports(2)
        self.cdr = self.dir / "cdr.jsonl"
        self.process = Twistd(self.dir, [
            "voip", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--state-dir", str(self.dir / "state"),
            "--rtp-ports", f"{rtp_base}-{rtp_base + 998}",
            "--metrics", f"tcp:{self.metrics_port}:interface=127.0.0.1",
            "--cdr", str(self.cdr), "--drain-timeout", str(drain_timeout),
        ])

    def ready(self) -> Instance:
        self.process.wait_for_log(r"answering calls with EchoDialog")
        return self

    def records(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in self.cdr.read_text().splitlines()]
        except FileNotFoundError:
            return []

    def metrics(self) -> dict[str, float]:
        """One scrape: ``name{labels}`` -> value (label order as exposed)."""
        url = f"http://127.0.0.1:{self.metrics_port}/"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        found = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                found[name] = float(value)
        return found

    def active(self) -> float:
        return self.metrics().get('voip_calls_active{direction="inbound"}', 0.0)


class DispatcherTests(SynchronousTestCase):
    timeout = 120

    def setUp(self) -> None:
        peers.require("kamailio", "sipp")
        if not os.path.exists(os.path.join(MODULES, "dispatcher.so")):
            self.skipTest("Kamailio's dispatcher module is not installed")
        self.dir = Path(tempfile.mkdtemp(prefix="dispatcher-"))
        if not os.environ.get("KEEP_DISPATCHER_DIR"):
            self.addCleanup(subprocess.run, ["rm", "-rf", str(self.dir)], check=False)

    def start(self, drain_timeout: int = 0) -> None:
        """Two instances, then Kamailio dispatching to them (once both answer probes)."""
        self.instances = []
        for i, base in enumerate((41000, 43000)):
            instance = Instance(self.dir, f"i{i}", base, drain_timeout)
            self.addCleanup(instance.process.stop)
            self.instances.append(instance)
        for instance in self.instances:
            instance.ready()
        ds_list = self.dir / "dispatcher.list"
        ds_list.write_text("".join(
            f"1 sip:127.0.0.1:{i.port};transport=tcp 0 0\n" for i in self.instances))
        self.sip_port = free_port("udp")
        self.kamailio = ManagedProcess([
            "kamailio", "-DD", "-E", "-f", str(CONFIG), "-Y", str(self.dir),
            "-A", f"SIP_PORT={self.sip_port}", "-A", f'DS_LIST="{ds_list}"',
            "-A", "DS_PING_INTERVAL=1",
        ], self.dir / "kamailio.log")
        self.addCleanup(self.kamailio.stop)
        self.kamailio.start()
        # Probing is on: each instance sees Kamailio's OPTIONS before calls start.
        for instance in self.instances:
            wait_until(lambda i=instance: i.metrics().get(
                'voip_sip_requests_total{direction="in",method="OPTIONS"}', 0) > 0,
                15, 0.2, what="dispatcher OPTIONS probe")

    def sipp(self, calls: int, rate: float, duration_ms: int, scenario: str = "uac_call"
             ) -> Sipp:
        agent = Sipp(scenario, ("127.0.0.1", self.sip_port), service="echo", calls=calls,
                     rate=rate, duration_ms=duration_ms, timeout=60,
                     tmpdir=str(self.dir))
        self.addCleanup(agent.cleanup)
        return agent

    def assertAllSucceeded(self, result: Any, calls: int) -> None:
        self.assertTrue(result.ok and result.successful == calls,
                        f"SIPp rc={result.returncode} ok={result.successful} "
                        f"failed={result.failed}\n{result.errors[-2000:]}\n"
                        f"{self.kamailio.read_log()[-3000:]}")

    def test_calls_spread_over_both_metrics_and_records_match(self) -> None:
        """60 calls with RTP (SIPp plays G.711 A-law, the echo sends it back) through the
        dispatcher: all answered, each instance takes 35-65 %;
        a scrape during the calls shows them active; afterwards the metrics' INVITE and
        2xx counts and the CDR lines (one per call) add up to SIPp's 60."""
        self.start()
        calls = 60
        agent = self.sipp(calls, rate=30, duration_ms=1500, scenario="uac_g711a").start()
        wait_until(lambda: sum(i.active() for i in self.instances) > 0, 20, 0.2,
                   what="calls active in the metrics")
        self.assertAllSucceeded(agent.wait(60), calls)
        wait_until(lambda: sum(len(i.records()) for i in self.instances) == calls, 10,
                   what="one call record per call")
        for instance in self.instances:
            share = len(instance.records()) / calls
            self.assertTrue(0.35 <= share <= 0.65, f"share {share:.2f}")
            found = instance.metrics()
            taken = len(instance.records())
            self.assertEqual(found['voip_calls_total{direction="inbound",status="200"}'], taken)
            self.assertEqual(found['voip_sip_requests_total{direction="in",method="INVITE"}'],
                             taken)
            self.assertEqual(found['voip_sip_requests_total{direction="in",method="BYE"}'],
                             taken)
            self.assertEqual(found['voip_calls_active{direction="inbound"}'], 0)
            records = instance.records()
            for field, metric in (("packets_received", "voip_rtp_packets_received_total"),
                                  ("packets_sent", "voip_rtp_packets_sent_total")):
                self.assertEqual(found[metric], sum(r[field] for r in records))
                self.assertGreater(found[metric], 0)
            for record in instance.records():
                self.assertEqual((record["final_status"], record["hangup_side"],
                                  record["hangup_reason"]), (200, "remote", "bye"))
                self.assertEqual(record["codec"], "PCMA")
                self.assertGreater(record["packets_received"], 0)
                self.assertGreater(record["mos"], 4)
                self.assertNotIn("<sip:", record["from"])  # masked as in logs

    def test_killed_instance_marked_down_then_every_call_on_the_other(self) -> None:
        """One instance is killed: once the dispatcher marks it down (its OPTIONS probe
        fails), every new call succeeds on the other instance."""
        self.start()
        self.assertAllSucceeded(self.sipp(10, rate=20, duration_ms=200).start().wait(60), 10)
        dead, alive = self.instances
        before = len(alive.records())
        dead.process.proc.send_signal(signal.SIGKILL)
        dead.process.proc.wait(10)
        wait_until(lambda: re.search(rf"instance sip:127\.0\.0\.1:{dead.port}\S* down",
                                     self.kamailio.read_log()), 20,
                   what="the dispatcher marking the instance down")
        self.assertAllSucceeded(self.sipp(30, rate=20, duration_ms=200).start().wait(60), 30)
        wait_until(lambda: len(alive.records()) == before + 30, 10, what="30 more records")

    def test_sigterm_drain_keeps_calls_new_ones_elsewhere_exit_after_last(self) -> None:
        """SIGTERM with --drain-timeout 30 during 20 active calls: none of them is cut, new
        calls go to the other instance, and the drained one exits once its last call has
        ended (long before the 30 s)."""
        self.start(drain_timeout=30)
        long_calls = self.sipp(20, rate=40, duration_ms=6000).start()
        wait_until(lambda: sum(i.active() for i in self.instances) == 20, 20, 0.2,
                   what="20 calls up")
        drained, other = self.instances
        held = drained.active()
        self.assertGreater(held, 0)
        drained.process.proc.send_signal(signal.SIGTERM)
        drained.process.wait_for_log(r"draining: \d+ call\(s\) may go on")
        self.assertIsNone(drained.process.proc.poll())
        before = len(other.records())
        self.assertAllSucceeded(self.sipp(10, rate=20, duration_ms=200).start().wait(60), 10)
        wait_until(lambda: len(other.records()) >= before + 10, 10, what="10 short calls")
        self.assertAllSucceeded(long_calls.wait(60), 20)
        code = drained.process.wait(20)
        self.assertIn(code, (0, -signal.SIGTERM))
        self.assertIn("Server Shut Down.", drained.process.log)
        self.assertNotIn("drain timeout", drained.process.log)
        # It took no new call while draining, and each of its calls was ended by the caller.
        self.assertEqual(len(drained.records()), held)
        for record in drained.records():
            self.assertEqual((record["hangup_side"], record["hangup_reason"]), ("remote", "bye"))
