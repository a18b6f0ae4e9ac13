"""Prometheus metrics (``--metrics``) and call records (``--cdr``) of a service (issue 15).

Calls run on ``MemoryReactorClock`` through the test_service helpers; the registry is read
with ``generate_latest``, as a scrape would.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from voiptwisted.cdr import estimated_mos, mos_from_r, r_factor
from voiptwisted.metrics import CallObserver, CallRecord

from .test_drain import caller_bye, options
from .test_service import ServiceTestCase, invite, written


def samples(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


class MetricsTests(ServiceTestCase):
    def metrics_service(self, **kwargs: Any) -> Any:
        service = self.service(metrics="tcp:0:interface=127.0.0.1", **kwargs)
        service.startService()
        return service

    def test_metrics_listener_bound_on_its_endpoint(self) -> None:
        service = self.metrics_service()
        ports = [port for port in self.reactor.tcpServers if port[0] == 0]
        self.assertEqual(len(ports), 1)
        self.assertEqual(ports[0][3], "127.0.0.1")
        self.assertIsNot(service.metrics_registry, REGISTRY)

    def test_calls_and_messages_counted(self) -> None:
        """Two answered calls, one ended by the caller: active, total by final status,
        setup latency, SIP messages by method and status class."""
        service = self.metrics_service()
        protocol, transport = self.answered_call(service, n=2)
        found = samples(service.metrics_registry)
        self.assertEqual(found["voip_calls_active", (("direction", "inbound"),)], 2)
        self.assertEqual(found["voip_call_setup_seconds_count", ()], 2)
        self.assertEqual(
            found["voip_sip_requests_total", (("direction", "in"), ("method", "INVITE"))], 2)
        self.assertEqual(found["voip_sip_responses_total", (
            ("direction", "out"), ("method", "INVITE"), ("status_class", "2xx"))], 2)
        caller_bye(protocol, transport, "call-0@test")
        found = samples(service.metrics_registry)
        self.assertEqual(found["voip_calls_active", (("direction", "inbound"),)], 1)
        self.assertEqual(
            found["voip_calls_total", (("direction", "inbound"), ("status", "200"))], 1)
        for name in ("voip_rtp_packets_sent_total", "voip_rtp_packets_lost_total",
                     "voip_srtp_auth_failures_total", "voip_rtp_jitter_max_milliseconds"):
            self.assertIn((name, ()), found)
        self.assertIn(("voip_pacer_lateness_seconds", (("which", "max"),)), found)

    def test_draining_and_refused_calls(self) -> None:
        service = self.metrics_service()
        protocol, transport = self.connect_caller(service)
        service.drain()
        protocol.dataReceived(options())
        written(transport)
        found = samples(service.metrics_registry)
        self.assertEqual(found["voip_draining", ()], 1)
        self.assertEqual(found["voip_sip_responses_total", (
            ("direction", "out"), ("method", "OPTIONS"), ("status_class", "5xx"))], 1)

    def test_no_observer_without_metrics_or_cdr(self) -> None:
        """Without --metrics and --cdr nothing is observed (no cost on any path)."""
        service = self.service()
        service.startService()
        protocol, _transport = self.connect_caller(service)
        self.assertIsNone(protocol.core.observer)


class StatsStandIn:
    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


class MediaStandIn:
    secure = True

    def __init__(self) -> None:
        self.negotiated = StatsStandIn(codec_name="PCMA")
        self.stats = StatsStandIn(packets_sent=500, packets_received=490, lost=10, late=1,
                                  auth_failures=0, jitter_ms=2.0)


class CallRecordTests(ServiceTestCase):
    def test_one_line_per_call_0600_masked(self) -> None:
        """--cdr: one JSON line per ended call, file mode 0600, parties masked as in logs."""
        path = self.state / "calls.jsonl"
        service = self.service(cdr=str(path))
        service.startService()
        protocol, transport = self.answered_call(service, n=2)
        self.reactor.advance(12)
        caller_bye(protocol, transport, "call-0@test")
        caller_bye(protocol, transport, "call-1@test")
        lines = path.read_text().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        record = json.loads(lines[0])
        self.assertEqual(record["call_id"], "call-0@test")
        self.assertEqual(record["direction"], "inbound")
        self.assertNotIn("alice@example.com", lines[0])
        self.assertIn("lice@example.com", record["from"])
        self.assertEqual(record["final_status"], 200)
        self.assertEqual((record["hangup_side"], record["hangup_reason"]), ("remote", "bye"))
        self.assertEqual(record["duration"], 12.0)
        for field in ("start", "answer", "end", "codec", "srtp", "packets_sent",
                      "packets_received", "packets_lost", "jitter_max_ms", "jitter_mean_ms",
                      "mos", "to"):
            self.assertIn(field, record)
        self.successResultOf(service.stopService())

    def test_full_uris(self) -> None:
        path = self.state / "calls.jsonl"
        service = self.service(cdr=str(path), cdr_full_uris=True)
        service.startService()
        protocol, transport = self.answered_call(service)
        caller_bye(protocol, transport, "call-0@test")
        self.assertIn("alice@example.com", json.loads(path.read_text())["from"])

    def test_refused_call_record(self) -> None:
        """A call we refuse (486 at max_calls) is recorded with its status, by us, "rejected"."""
        path = self.state / "calls.jsonl"
        service = self.service(cdr=str(path), max_calls=1)
        service.startService()
        first = self.answered_call(service)
        other, _transport = self.connect_caller(service)
        other.dataReceived(invite("second@test", "z9hG4bKsecond"))
        self.assertEqual(first[0].dialog_count, 1)
        (record,) = [json.loads(line) for line in path.read_text().splitlines()]
        self.assertEqual(record["call_id"], "second@test")
        self.assertEqual((record["final_status"], record["hangup_side"],
                          record["hangup_reason"], record["answer"], record["mos"]),
                         (486, "local", "rejected", None, None))

    def test_media_figures_sampled(self) -> None:
        """Packets, loss, jitter max/mean, codec and SRTP come from the call's media."""
        clock = self.reactor
        observer = CallObserver(clock)
        ended: list[CallRecord] = []
        observer.listeners.append(ended.append)
        record = CallRecord("c@x", "inbound", "sip:a@b", "sip:c@d", start=0.0,
                            media=MediaStandIn())
        record.sample()
        record.media.stats.jitter_ms = 4.0
        record.sample()
        self.assertEqual((record.jitter_max_ms, record.jitter_mean_ms), (4.0, 3.0))
        self.assertEqual((record.codec, record.srtp, record.lost), ("PCMA", True, 10))


class EModelTests(ServiceTestCase):
    def test_g711_no_loss_is_toll_quality(self) -> None:
        """ITU-T G.107: G.711 without loss at modest delay rates R ≈ 91, MOS ≈ 4.37."""
        r = r_factor("PCMU", 0.0, 85.0)
        self.assertAlmostEqual(r, 93.2 - 0.024 * 85, places=6)
        self.assertAlmostEqual(mos_from_r(r), 4.37, places=2)

    def test_loss_and_delay_lower_the_score(self) -> None:
        """Ie,eff grows with loss (Bpl 25.1 for G.711 with PLC); Id grows past 177.3 ms."""
        self.assertAlmostEqual(r_factor("PCMA", 5.0, 0.0), 93.2 - 95 * 5 / 30.1, places=6)
        self.assertLess(r_factor("PCMA", 0.0, 300.0), r_factor("PCMA", 0.0, 170.0) - 13)

    def test_mos_bounds_and_no_media(self) -> None:
        """G.107 Annex B: MOS 1 for R <= 0, 4.5 for R >= 100."""
        self.assertEqual(mos_from_r(-5), 1.0)
        self.assertEqual(mos_from_r(120), 4.5)
        self.assertIsNone(estimated_mos("PCMU", 0, 0))
        self.assertGreater(estimated_mos("PCMU", 1000, 0), estimated_mos("PCMU", 900, 100))
