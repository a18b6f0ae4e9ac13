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
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from tests.integration import peers
from tests.integration.peers import ManagedProcess, Sipp, free_port, free_ports, wait_until
from tests.integration.support import exec_action, uac_scenario
from tests.integration.test_twistd import Twistd
from voiptwisted.apps import shown_party
from voiptwisted.codecs.g711 import alaw_encode

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "kamailio" / "dispatcher.cfg"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
#: Calls of the spread test, and the seconds of RTP each streams (short: calls overlap,
#: the run stays a few seconds long).
CALLS = 200
RTP_SECONDS = 2
#: Seconds of RTP of the calls that are up when an instance is killed.
HELD_SECONDS = 8
#: SDP media of SIPp's offer: PCMA from its rtp_stream port.
MEDIA = ["m=audio [rtpstream_audio_port] RTP/AVP 8", "a=rtpmap:8 PCMA/8000", "a=ptime:20"]
#: The number SIPp calls (Kamailio dispatches whatever the number; the records mask it).
CALLEE = "5550123456"
ACTIVE = 'voip_calls_active{direction="inbound"}'
ENDED = 'voip_calls_total{direction="inbound",status="200"}'
RECEIVED = "voip_rtp_packets_received_total"
SENT = "voip_rtp_packets_sent_total"
LOST = "voip_rtp_packets_lost_total"
#: The fields of a call record (README, "Call records").
CDR_FIELDS = {
    "call_id", "direction", "from", "to", "start", "answer", "end", "duration",
    "final_status", "hangup_side", "hangup_reason", "codec", "srtp", "packets_sent",
    "packets_received", "packets_lost", "jitter_max_ms", "jitter_mean_ms", "mos",
}  # fmt: skip


def rtp_scenario(directory: Path, name: str, seconds: float) -> str:
    """A SIPp UAC scenario streaming *seconds* of a 440 Hz PCMA tone (``rtp_stream``, 20 ms
    packets, looping a one-second file) before its BYE; returns its path."""
    t = np.arange(8000) / 8000.0
    tone = directory / "tone.alaw"
    tone.write_bytes(bytes(alaw_encode((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))))
    actions = (exec_action(f'rtp_stream="{tone},-1,8"', int(seconds * 1000))
               + exec_action('rtp_stream="pause"'))
    return uac_scenario(str(directory), name, MEDIA, actions)


def call_ids(agent: Sipp) -> set[str]:
    """The Call-IDs of the INVITEs *agent* sent (from its message trace)."""
    return set(re.findall(r"^INVITE .*?^Call-ID: *(\S+)", agent.messages, re.M | re.S))


class Instance:
    """One ``twistd voip`` echo instance listening on TCP, with --metrics and --cdr."""

    def __init__(self, workdir: Path, name: str, rtp_base: int, drain_timeout: int = 0,
                 rtp_span: int = 998):
        self.dir = workdir / name
        self.dir.mkdir()
        self.port, self.metrics_port = free_ports(2)
        self.cdr = self.dir / "cdr.jsonl"
        self.process = Twistd(self.dir, [
            "voip", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--state-dir", str(self.dir / "state"),
            "--rtp-ports", f"{rtp_base}-{rtp_base + rtp_span}",
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

    def start(self, drain_timeout: int = 0, probe_threshold: int = 1) -> None:
        """Two instances, then Kamailio dispatching to them (once both answer probes);
        *probe_threshold* failed probes mark an instance down."""
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
            "-A", "DS_PING_INTERVAL=1", "-A", f"DS_PROBE_THRESHOLD={probe_threshold}",
        ], self.dir / "kamailio.log")
        self.addCleanup(self.kamailio.stop)
        self.kamailio.start()
        # Probing is on: each instance sees Kamailio's OPTIONS before calls start.
        for instance in self.instances:
            wait_until(lambda i=instance: i.metrics().get(
                'voip_sip_requests_total{direction="in",method="OPTIONS"}', 0) > 0,
                15, 0.2, what="dispatcher OPTIONS probe")

    def sipp(self, calls: int, rate: float, duration_ms: int | None,
             scenario: str = "uac_call", extra_args: list[str] | None = None) -> Sipp:
        agent = Sipp(scenario, ("127.0.0.1", self.sip_port), service=CALLEE, calls=calls,
                     rate=rate, duration_ms=duration_ms, timeout=60,
                     tmpdir=str(self.dir), extra_args=extra_args or ())
        self.addCleanup(agent.cleanup)
        return agent

    def rtp_scenario(self, name: str = "rtp", seconds: float = RTP_SECONDS) -> str:
        return rtp_scenario(self.dir, name, seconds)

    def totals(self, accept: Callable[[dict[str, float]], bool] | None = None
               ) -> dict[str, float]:
        """One scrape of each instance, the samples summed; {} unless *accept* takes it."""
        summed: dict[str, float] = {}
        for instance in self.instances:
            for name, value in instance.metrics().items():
                summed[name] = summed.get(name, 0.0) + value
        for name in (ACTIVE, ENDED, RECEIVED, SENT):
            summed.setdefault(name, 0.0)
        return summed if accept is None or accept(summed) else {}

    def assertAllSucceeded(self, result: Any, calls: int) -> None:
        self.assertTrue(result.ok and result.successful == calls,
                        f"SIPp rc={result.returncode} ok={result.successful} "
                        f"failed={result.failed}\n{result.errors[-2000:]}\n"
                        f"{self.kamailio.read_log()[-3000:]}")

    def test_200_calls_with_rtp_spread_metrics_and_records_match(self) -> None:
        """Issue 15: 200 SIPp calls with RTP through the dispatcher all succeed and each
        instance takes 35-65 % of them.  Each call streams RTP_SECONDS of PCMA
        (``rtp_stream``, 20 ms packets) that the echo sends back; calls overlap (50 cps).

        Metrics: scrapes during the calls show calls up and the call and RTP counters
        moving; afterwards each instance's INVITE/ACK/BYE and 200-call counters equal the
        calls it took, and their sums SIPp's 200.  Call records: one line per call, their
        Call-IDs exactly those of SIPp's INVITEs, every field present and consistent with
        the call (masked parties, times in order, PCMA, the RTP counters the metrics
        report)."""
        self.start()
        agent = self.sipp(CALLS, rate=50, duration_ms=None, scenario=self.rtp_scenario(),
                          extra_args=["-l", str(CALLS)]).start()
        # A first scrape once calls are up, then one showing ended calls and RTP added to it
        # while calls are still up: the counters move during the calls.
        first = wait_until(lambda: self.totals(lambda m: m.get(ACTIVE, 0) > 0), 30, 0.1,
                           what="calls up in the metrics")

        def moved() -> dict[str, float] | None:
            now = self.totals()
            return now if (now[ACTIVE] > 0 and now[ENDED] > first[ENDED]
                           and now[RECEIVED] > first[RECEIVED]
                           and now[SENT] > first[SENT]) else None

        during = wait_until(moved, 30, 0.1, what="counters moving during the calls")
        self.assertLessEqual(during[ENDED], CALLS)
        result = agent.wait(90)
        self.assertAllSucceeded(result, CALLS)
        wait_until(lambda: sum(len(i.records()) for i in self.instances) == CALLS, 10,
                   what="one call record per call")
        invited = call_ids(agent)
        self.assertEqual(len(invited), CALLS)
        recorded: list[str] = []
        totals = self.totals()
        for instance in self.instances:
            records = instance.records()
            taken = len(records)
            self.assertTrue(0.35 <= taken / CALLS <= 0.65, f"instance took {taken} of {CALLS}")
            found = instance.metrics()
            self.assertEqual(found[ENDED], taken)
            # Every message counts, retransmissions too: under load a late ACK makes the
            # instance resend its 200 (RFC 3261 §13.3.1.4: the UAS core does so on any
            # transport) and each resent 200 gets an ACK of its own (CI once saw 108 ACKs
            # for 100 calls), so the request counters are at least the calls; the call
            # counters above are exact.
            for method in ("INVITE", "ACK", "BYE"):
                self.assertGreaterEqual(
                    found[f'voip_sip_requests_total{{direction="in",method="{method}"}}'],
                    taken, method)
            self.assertEqual(found[ACTIVE], 0)
            for field, metric in (("packets_received", RECEIVED), ("packets_sent", SENT),
                                  ("packets_lost", LOST)):
                self.assertEqual(found[metric], sum(r[field] for r in records), field)
            for record in records:
                self.assertRecord(record, agent)
                recorded.append(record["call_id"])
        self.assertEqual(totals[ENDED], result.successful)
        self.assertEqual(sorted(recorded), sorted(invited))

    def assertRecord(self, record: dict[str, Any], agent: Sipp) -> None:
        """One call record of an echo call *agent* placed and ended with BYE."""
        self.assertEqual(set(record), CDR_FIELDS)
        self.assertEqual(
            (record["direction"], record["final_status"], record["hangup_side"],
             record["hangup_reason"], record["codec"], record["srtp"]),
            ("inbound", 200, "remote", "bye", "PCMA", False), record)
        # The parties as the logs show them: the callee's number masked but its last 4 digits.
        self.assertEqual(record["to"], shown_party(f"sip:{CALLEE}@127.0.0.1:{self.sip_port}"))
        self.assertNotIn(CALLEE, record["to"])
        self.assertEqual(record["from"], shown_party(f"sip:sipp@127.0.0.1:{agent.local_port}"))
        start, answer, end = (datetime.fromisoformat(record[k].replace("Z", "+00:00"))
                              for k in ("start", "answer", "end"))
        self.assertTrue(start <= answer <= end, record)
        # Millisecond times, duration rounded from the unrounded ones: within 2 ms.
        self.assertLessEqual(abs(record["duration"] - (end - answer).total_seconds()), 0.002)
        self.assertGreater(record["packets_received"], 0, record)
        self.assertGreater(record["packets_sent"], 0, record)
        self.assertGreaterEqual(record["packets_lost"], 0)
        self.assertGreaterEqual(record["jitter_max_ms"], record["jitter_mean_ms"])
        self.assertGreaterEqual(record["jitter_mean_ms"], 0)
        self.assertTrue(1.0 <= record["mos"] <= 4.5, record)

    def test_killed_instance_calls_up_on_it_fail_every_new_call_on_the_other(self) -> None:
        """Issue 15: one instance is killed (SIGKILL) while 20 calls with RTP are up on the
        two.  Exactly the calls up on the killed instance fail (their BYE, routed by the
        dialog's Record-Route to the dead instance, gets Kamailio's 477); those on the
        other end normally.  Once the dispatcher has marked the instance down (its OPTIONS probe
        fails), 30 new calls with RTP all succeed, all on the surviving instance.
        Calls are placed only while no instance is dying, so no call is caught half set up
        (an INVITE the dead instance had taken but not answered waits for Kamailio's
        120 s INVITE timer)."""
        self.start()
        up = self.sipp(20, rate=40, duration_ms=None, extra_args=["-l", "20"],
                       scenario=self.rtp_scenario("held", seconds=HELD_SECONDS)).start()
        wait_until(lambda: self.totals()[ACTIVE] == 20, 30, 0.1, what="20 calls up")
        dead, alive = self.instances
        on_dead, on_alive = dead.active(), alive.active()
        self.assertEqual(on_dead + on_alive, 20)
        self.assertGreater(on_dead, 0)
        dead.process.proc.send_signal(signal.SIGKILL)
        dead.process.proc.wait(10)
        wait_until(lambda: re.search(rf"instance sip:127\.0\.0\.1:{dead.port}\S* down",
                                     self.kamailio.read_log()), 20,
                   what="the dispatcher marking the instance down")
        new = self.sipp(30, rate=20, duration_ms=None, scenario=self.rtp_scenario()).start()
        self.assertAllSucceeded(new.wait(90), 30)
        placed = call_ids(new)
        self.assertEqual(len(placed), 30)
        wait_until(lambda: {r["call_id"] for r in alive.records()} >= placed, 10,
                   what="the 30 new calls' records on the surviving instance")
        for record in alive.records():
            if record["call_id"] in placed:
                self.assertRecord(record, new)
        result = up.wait(90)
        self.assertEqual((result.successful, result.failed), (on_alive, on_dead),
                         f"{result.errors[-2000:]}")
        wait_until(lambda: len(alive.records()) == on_alive + 30, 10, what="the held calls")

    def test_calls_sent_to_a_killed_instance_fail_over_at_once(self) -> None:
        """An instance killed before any probe notices (probing would need 1000 failed
        probes here): round-robin sends one of the first two new calls to it, the connection
        is refused, and deploy/kamailio/dispatcher.cfg marks it down and relays the call to
        the other instance.  All 10 calls succeed, all on the other instance."""
        self.start(probe_threshold=1000)
        dead, alive = self.instances
        dead.process.proc.send_signal(signal.SIGKILL)
        dead.process.proc.wait(10)
        self.assertAllSucceeded(self.sipp(10, rate=20, duration_ms=200).start().wait(60), 10)
        wait_until(lambda: len(alive.records()) == 10, 10, what="10 records")
        self.assertRegex(self.kamailio.read_log(),
                         rf"instance sip:127\.0\.0\.1:{dead.port}\S* unreachable for INVITE")

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
