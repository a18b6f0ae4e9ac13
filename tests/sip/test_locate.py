"""Tests for voiptwisted.sip.locate: RFC 3263 server location with DNS SRV (RFC 2782).

Unit tests ask an in-memory ``twisted.names`` zone (or a failing fake) instead of the network;
the TLS tests at the end connect over 127.0.0.1 with the test PKI.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

from twisted.internet import defer, reactor, ssl
from twisted.internet import protocol as tw_protocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.names import dns
from twisted.names import error as dns_error
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.integration.certs import SIP_DOMAIN, SRV_TARGET, get_pki
from tests.integration.dnsserver import MemoryZone
from voiptwisted.sip.connect import TLSVerificationFailed, client_endpoint
from voiptwisted.sip.locate import (
    MAX_TARGETS,
    DNSHostnameResolver,
    ServerLocator,
    ServiceNotOffered,
    order_srv_records,
    srv_name,
)
from voiptwisted.sip.uri import SipURI


def capture_logs(test: Any) -> list[dict]:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def lines(events: list[dict], *levels: LogLevel) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_level") in levels]


class ScriptedRandom(random.Random):
    """``randint`` returns scripted values (or the upper bound) and records its bounds."""

    def __init__(self, values: list[int] | None = None) -> None:
        super().__init__(0)
        self.values = list(values or [])
        self.calls: list[tuple[int, int]] = []

    def randint(self, a: int, b: int) -> int:
        self.calls.append((a, b))
        return self.values.pop(0) if self.values else b


class RecordingResolver:
    """An IResolver stand-in: records SRV queries, answers with ``outcome``."""

    def __init__(self, outcome: Any = None) -> None:
        self.outcome = outcome
        self.queries: list[tuple[str, Any]] = []

    def lookupService(self, name: str, timeout: Any = None) -> defer.Deferred:
        self.queries.append((name, timeout))
        if isinstance(self.outcome, Exception):
            return defer.fail(self.outcome)
        return defer.succeed(self.outcome or ([], [], []))


def srv(priority: int, weight: int, port: int, target: str) -> dns.Record_SRV:
    return dns.Record_SRV(priority, weight, port, target)


#: The root name "." as an SRV target (on the wire: the empty name).
ROOT = ""


def zone(records: dict[str, list[Any]]) -> MemoryZone:
    return MemoryZone(SIP_DOMAIN, records)


class SRVOrderingTests(SynchronousTestCase):
    """RFC 2782 (used by RFC 3263 §4.4): priority order, weighted random within a priority."""

    def test_lowest_priority_first(self) -> None:
        records = [srv(20, 0, 1, "c"), srv(10, 0, 2, "a"), srv(30, 0, 3, "d"), srv(10, 0, 4, "b")]
        ordered = order_srv_records(records, ScriptedRandom())
        self.assertEqual([str(r.target) for r in ordered], ["a", "b", "c", "d"])

    def test_weighted_selection(self) -> None:
        """RFC 2782: zero weights first, running sums 0/10/40; a uniform pick in [0, 40] takes
        the first record whose running sum reaches it; repeat with the rest."""
        records = [srv(10, 10, 1, "b"), srv(10, 30, 2, "c"), srv(10, 0, 3, "a")]
        rng = ScriptedRandom([5, 0, 30])
        ordered = order_srv_records(records, rng)
        self.assertEqual([str(r.target) for r in ordered], ["b", "a", "c"])
        self.assertEqual(rng.calls, [(0, 40), (0, 30), (0, 30)])

    def test_heavier_record_wins_most_picks(self) -> None:
        """Over many real random orderings a weight-90 record comes first ~90% of the time."""
        records = [srv(0, 10, 1, "light"), srv(0, 90, 2, "heavy")]
        rng = random.Random(1234)
        first = [str(order_srv_records(records, rng)[0].target) for _ in range(2000)]
        self.assertGreater(first.count("heavy"), 1700)
        self.assertGreater(first.count("light"), 100)

    def test_at_most_max_targets(self) -> None:
        records = [srv(p % 3, p, 5061, f"h{p}") for p in range(40)]
        ordered = order_srv_records(records, ScriptedRandom())
        self.assertEqual(len(ordered), MAX_TARGETS)
        self.assertEqual({r.priority for r in ordered[:13]}, {0})


class LocatorTests(SynchronousTestCase):
    """RFC 3263 §4.2: SRV unless the TARGET is an IP literal or the URI has a port."""

    def locate(self, uri: str, resolver: Any, rng: random.Random | None = None) -> Any:
        locator = ServerLocator(resolver, rng=rng or ScriptedRandom())
        return locator(SipURI.parse(uri))

    def test_srv_names(self) -> None:
        """RFC 3263 §4.2: _sips for TLS (also a sip: URI over TLS), _sip for TCP."""
        self.assertEqual(srv_name("voip.test", "TLS"), "_sips._tcp.voip.test")
        self.assertEqual(srv_name("voip.test.", "TCP"), "_sip._tcp.voip.test")

    def test_sips_srv_targets_in_order(self) -> None:
        """RFC 3263 §4.2/§4.4: the SRV targets, lowest priority first, at their ports."""
        events = capture_logs(self)
        records = {
            "_sips._tcp.voip.test": [
                srv(20, 0, 5071, "backup.voip.test"),
                srv(10, 0, 5061, SRV_TARGET),
            ]
        }
        targets = self.successResultOf(self.locate("sips:alice@voip.test", zone(records)))
        self.assertEqual(targets, [(SRV_TARGET, 5061), ("backup.voip.test", 5071)])
        self.assertIn(
            "DNS SRV _sips._tcp.voip.test: kamailio.voip.test:5061, backup.voip.test:5071",
            lines(events, LogLevel.info),
        )

    def test_sip_over_tls_uses_sips_service(self) -> None:
        """RFC 3263 §4.2: a SIP URI the client reaches over TLS is looked up as _sips."""
        resolver = RecordingResolver()
        self.successResultOf(self.locate("sip:alice@voip.test", resolver))
        self.assertEqual(resolver.queries[0][0], "_sips._tcp.voip.test")

    def test_transport_tcp_uses_sip_service(self) -> None:
        """RFC 3263 §4.2: ;transport=tcp looks up _sip._tcp, and falls back to port 5060."""
        records = {"_sip._tcp.voip.test": [srv(0, 0, 5080, SRV_TARGET)]}
        found = self.successResultOf(
            self.locate("sip:alice@voip.test;transport=tcp", zone(records))
        )
        self.assertEqual(found, [(SRV_TARGET, 5080)])
        resolver = RecordingResolver()
        fallback = self.successResultOf(self.locate("sip:alice@voip.test;transport=tcp", resolver))
        self.assertEqual(resolver.queries[0][0], "_sip._tcp.voip.test")
        self.assertEqual(fallback, [("voip.test", 5060)])

    def test_transport_udp_uses_sip_udp_service(self) -> None:
        """RFC 3263 §4.2: ;transport=udp looks up _sip._udp, and falls back to port 5060."""
        self.assertEqual(srv_name("voip.test", "UDP"), "_sip._udp.voip.test")
        records = {"_sip._udp.voip.test": [srv(0, 0, 5090, SRV_TARGET)]}
        found = self.successResultOf(
            self.locate("sip:alice@voip.test;transport=udp", zone(records))
        )
        self.assertEqual(found, [(SRV_TARGET, 5090)])
        resolver = RecordingResolver()
        fallback = self.successResultOf(self.locate("sip:alice@voip.test;transport=udp", resolver))
        self.assertEqual(resolver.queries[0][0], "_sip._udp.voip.test")
        self.assertEqual(fallback, [("voip.test", 5060)])

    def test_sips_with_transport_udp_stays_tls(self) -> None:
        """RFC 3261 §26.2.2 / RFC 3263 §4.1: a sips: AOR is never downgraded to UDP."""
        resolver = RecordingResolver()
        self.successResultOf(self.locate("sips:alice@voip.test;transport=udp", resolver))
        self.assertEqual(resolver.queries[0][0], "_sips._tcp.voip.test")

    def test_weights_use_the_injected_random_source(self) -> None:
        records = {
            "_sips._tcp.voip.test": [srv(10, 1, 5061, "one.voip.test"), srv(10, 3, 5061, "three")]
        }
        rng = ScriptedRandom([2, 0])
        found = self.successResultOf(self.locate("sips:alice@voip.test", zone(records), rng))
        self.assertEqual([host for host, _ in found], ["three", "one.voip.test"])
        self.assertEqual(rng.calls, [(0, 4), (0, 1)])

    def test_dot_target_means_not_offered(self) -> None:
        """RFC 2782: a single SRV record with target "." -- the service is not available."""
        records = {"_sips._tcp.voip.test": [srv(0, 0, 0, ROOT)]}
        failure = self.failureResultOf(
            self.locate("sips:alice@voip.test", zone(records)), ServiceNotOffered
        )
        self.assertEqual(
            str(failure.value),
            "DNS SRV _sips._tcp.voip.test says SIP over TLS is not offered at voip.test "
            "(target '.', RFC 2782)",
        )

    def test_no_srv_falls_back_to_the_host(self) -> None:
        """RFC 3263 §4.2: no SRV records (NXDOMAIN) -> A/AAAA of the host at the default port,
        said in one info line naming the SRV name."""
        events = capture_logs(self)
        found = self.successResultOf(self.locate("sips:alice@voip.test", zone({})))
        self.assertEqual(found, [("voip.test", 5061)])
        info = lines(events, LogLevel.info)
        self.assertEqual(len(info), 1, info)
        self.assertIn("_sips._tcp.voip.test: no such name (NXDOMAIN)", info[0])
        self.assertIn("connecting to voip.test:5061", info[0])
        self.assertEqual(lines(events, LogLevel.warn, LogLevel.error), [])

    def test_empty_answer_falls_back(self) -> None:
        """RFC 3263 §4.2: an SRV name without SRV records (NODATA) is "no SRV records"."""
        records = {"_sips._tcp.voip.test": [dns.Record_TXT(b"nothing here")]}
        found = self.successResultOf(self.locate("sips:alice@voip.test", zone(records)))
        self.assertEqual(found, [("voip.test", 5061)])

    def test_dns_failures_fall_back_with_one_warning(self) -> None:
        """A timed-out, failed or refused SRV query: one warning naming the name and the
        reason, then the host's A/AAAA at the default port (RFC 3263 §4.2), no traceback."""
        cases = [
            (dns_error.DNSQueryTimeoutError(1), "no answer in time (timeout)"),
            (defer.TimeoutError("query"), "no answer in time (timeout)"),  # after all retries
            (dns_error.DNSServerError(), "server failure (SERVFAIL)"),
            (dns_error.DNSQueryRefusedError(), "query refused (REFUSED)"),
        ]
        for error, reason in cases:
            events = capture_logs(self)
            found = self.successResultOf(
                self.locate("sips:alice@voip.test", RecordingResolver(error))
            )
            self.assertEqual(found, [("voip.test", 5061)])
            warnings = lines(events, LogLevel.warn, LogLevel.error, LogLevel.critical)
            self.assertEqual(
                warnings,
                [
                    f"DNS SRV lookup of _sips._tcp.voip.test: {reason}; connecting to "
                    "voip.test:5061 (RFC 3263 §4.2)"
                ],
            )
            self.assertFalse([e for e in events if e.get("log_failure") is not None])

    def test_lookup_is_bounded(self) -> None:
        """Each query has the DNS timeouts (1 s, then 3 s), and at most 16 targets are used."""
        records = {"_sips._tcp.voip.test": [srv(0, 0, 5061, f"h{n}.voip.test") for n in range(30)]}
        found = self.successResultOf(self.locate("sips:alice@voip.test", zone(records)))
        self.assertEqual(len(found), MAX_TARGETS)
        resolver = RecordingResolver()
        self.successResultOf(self.locate("sips:alice@voip.test", resolver))
        self.assertEqual(resolver.queries, [("_sips._tcp.voip.test", (1, 3))])

    def test_explicit_port_skips_srv(self) -> None:
        """RFC 3263 §4.2: a name with a port is not looked up as SRV (A/AAAA at that port)."""
        resolver = RecordingResolver(AssertionError("no DNS expected"))
        for uri, expected in [
            ("sips:alice@voip.test:5061", ("voip.test", 5061)),
            ("sip:alice@voip.test:5090;transport=tcp", ("voip.test", 5090)),
        ]:
            self.assertEqual(self.successResultOf(self.locate(uri, resolver)), [expected])
        self.assertEqual(resolver.queries, [])

    def test_ip_literal_skips_srv(self) -> None:
        """RFC 3263 §4.2: an IP address is used as is, at the transport's default port."""
        resolver = RecordingResolver(AssertionError("no DNS expected"))
        for uri, expected in [
            ("sips:alice@192.0.2.1", ("192.0.2.1", 5061)),
            ("sip:alice@192.0.2.1", ("192.0.2.1", 5061)),  # TLS: the TLS default port
            ("sip:alice@[2001:db8::1];transport=tcp", ("2001:db8::1", 5060)),
            ("sips:alice@[::1]:5071", ("::1", 5071)),
        ]:
            self.assertEqual(self.successResultOf(self.locate(uri, resolver)), [expected])
        self.assertEqual(resolver.queries, [])

    def test_maddr_is_the_target(self) -> None:
        """RFC 3263 §4 / RFC 3261 §19.1.1: maddr takes precedence over the host; an IP maddr
        is used directly, a name maddr is looked up as SRV."""
        resolver = RecordingResolver()
        direct = self.successResultOf(
            self.locate("sips:alice@voip.test;maddr=192.0.2.7", resolver)
        )
        self.assertEqual(direct, [("192.0.2.7", 5061)])
        self.assertEqual(resolver.queries, [])
        by_name = self.successResultOf(
            self.locate("sips:alice@voip.test;maddr=edge.example.net", resolver)
        )
        self.assertEqual(resolver.queries[0][0], "_sips._tcp.edge.example.net")
        self.assertEqual(by_name, [("edge.example.net", 5061)])

    def test_port_given_survives_copies(self) -> None:
        """RFC 3263 §4.2 needs to know whether the port was written: pickling and replace()
        keep that, the canonical string always shows the port."""
        bare = SipURI.parse("sips:alice@voip.test")
        given = SipURI.parse("sips:alice@voip.test:5061")
        self.assertEqual(str(bare), str(given))
        self.assertEqual((bare.port_given, given.port_given), (False, True))
        self.assertFalse(pickle.loads(pickle.dumps(bare)).port_given)  # noqa: S301
        self.assertTrue(pickle.loads(pickle.dumps(given)).port_given)  # noqa: S301
        self.assertFalse(bare.with_parameters(transport="tcp").port_given)
        self.assertTrue(given.replace(user="bob").port_given)
        self.assertFalse(SipURI("sips", "voip.test").port_given)


def naptr(order: int, preference: int, service: str, replacement: str,
          flags: str = "s") -> dns.Record_NAPTR:
    return dns.Record_NAPTR(order, preference, flags.encode(), service.encode(), b"",
                            replacement)


class NAPTRTests(SynchronousTestCase):
    """RFC 3263 §4.1: NAPTR chooses the transport when the AOR names none and no port."""

    def choose(self, uri: str, records: dict[str, list[Any]]) -> tuple[str, Any]:
        locator = ServerLocator(zone(records), rng=ScriptedRandom())
        aor = SipURI.parse(uri)
        transport = self.successResultOf(locator.choose_transport(aor))
        return transport, self.successResultOf(locator(aor))

    def test_lowest_order_then_preference_wins_rfc3263_4_1(self) -> None:
        """§4.1: of the supported records, lowest order first, then lowest preference; the
        chosen record's replacement is the SRV name looked up."""
        events = capture_logs(self)
        records = {
            "voip.test": [
                naptr(20, 10, "SIPS+D2T", "_sips._tcp.voip.test"),
                naptr(10, 20, "SIP+D2T", "_sip._tcp.voip.test"),
                naptr(10, 10, "SIP+D2U", "_sip._udp.voip.test"),
            ],
            "_sip._udp.voip.test": [srv(0, 0, 5090, SRV_TARGET)],
        }
        self.assertEqual(
            self.choose("sip:alice@voip.test", records), ("UDP", [(SRV_TARGET, 5090)])
        )
        self.assertIn(
            "DNS NAPTR voip.test: SIP over UDP, SRV _sip._udp.voip.test (RFC 3263 §4.1)",
            lines(events, LogLevel.info),
        )

    def test_replacement_names_the_srv_records_rfc3263_4_1(self) -> None:
        """§4.1: the SRV name is the NAPTR replacement, whatever it is called."""
        records = {
            "voip.test": [naptr(10, 10, "SIP+D2T", "tcp-servers.voip.test")],
            "tcp-servers.voip.test": [srv(0, 0, 5070, SRV_TARGET)],
        }
        self.assertEqual(
            self.choose("sip:alice@voip.test", records), ("TCP", [(SRV_TARGET, 5070)])
        )

    def test_unsupported_services_and_flags_skipped_rfc3263_4_1(self) -> None:
        """§4.1: records of services we do not support (SCTP, unknown) and without flag "s"
        are discarded; the best remaining one is used."""
        records = {
            "voip.test": [
                naptr(1, 1, "SIP+D2S", "_sip._sctp.voip.test"),
                naptr(2, 1, "SIP+D2T", "_sip._tcp.voip.test", flags="a"),
                naptr(3, 1, "E2U+sip", "_sip._tcp.voip.test"),
                naptr(4, 1, "SIPS+D2T", "_sips._tcp.voip.test"),
            ],
            "_sips._tcp.voip.test": [srv(0, 0, 5061, SRV_TARGET)],
        }
        self.assertEqual(
            self.choose("sip:alice@voip.test", records), ("TLS", [(SRV_TARGET, 5061)])
        )

    def test_sips_aor_never_downgraded_rfc3263_4_1(self) -> None:
        """§4.1: a SIPS URI discards every non-SIPS service: TLS even when the domain
        prefers UDP, through the SIPS+D2T record's SRV name."""
        records = {
            "voip.test": [
                naptr(10, 10, "SIP+D2U", "_sip._udp.voip.test"),
                naptr(20, 10, "SIPS+D2T", "tls.voip.test"),
            ],
            "tls.voip.test": [srv(0, 0, 5066, SRV_TARGET)],
        }
        self.assertEqual(
            self.choose("sips:alice@voip.test", records), ("TLS", [(SRV_TARGET, 5066)])
        )
        only_udp = {"voip.test": [naptr(10, 10, "SIP+D2U", "_sip._udp.voip.test")]}
        transport, _ = self.choose("sips:alice@voip.test", only_udp)
        self.assertEqual(transport, "TLS")

    def test_no_naptr_keeps_tls_and_srv_order(self) -> None:
        """§4.1: without NAPTR records the SRV lookup of our default transport follows."""
        records = {"_sips._tcp.voip.test": [srv(0, 0, 5061, SRV_TARGET)]}
        self.assertEqual(
            self.choose("sip:alice@voip.test", records), ("TLS", [(SRV_TARGET, 5061)])
        )

    def test_failed_naptr_lookup_keeps_tls(self) -> None:
        """A NAPTR lookup that fails (SERVFAIL) is logged and TLS is kept."""
        events = capture_logs(self)

        class Failing(RecordingResolver):
            def lookupNamingAuthorityPointer(self, name: str, timeout: Any = None) -> Any:
                return defer.fail(dns_error.DNSServerError("servfail"))

        locator = ServerLocator(Failing())
        self.assertEqual(
            self.successResultOf(locator.choose_transport(SipURI.parse("sip:a@voip.test"))),
            "TLS",
        )
        self.assertTrue(any("NAPTR" in line for line in lines(events, LogLevel.warn)))

    def test_named_transport_or_port_skips_naptr_rfc3263_4_1(self) -> None:
        """§4.1: a transport parameter, a port or an IP literal decides without NAPTR."""
        resolver = RecordingResolver()

        def lookupNamingAuthorityPointer(name: str, timeout: Any = None) -> Any:
            raise AssertionError("NAPTR asked")

        resolver.lookupNamingAuthorityPointer = lookupNamingAuthorityPointer  # type: ignore[attr-defined]
        locator = ServerLocator(resolver)
        for uri, transport in [
            ("sip:a@voip.test;transport=udp", "UDP"),
            ("sip:a@voip.test;transport=tcp", "TCP"),
            ("sip:a@voip.test:5060", "TLS"),
            ("sip:a@192.0.2.1", "TLS"),
            ("sips:a@voip.test;transport=udp", "TLS"),
        ]:
            chosen = self.successResultOf(locator.choose_transport(SipURI.parse(uri)))
            self.assertEqual(chosen, transport, uri)


class HostnameResolverTests(SynchronousTestCase):
    """The SRV targets' A/AAAA records come from the same DNS server as the SRV records."""

    def resolve(self, name: str, **kwargs: Any) -> tuple[list[Any], bool]:
        records = {
            SRV_TARGET: [dns.Record_A("127.0.0.1"), dns.Record_AAAA("::1")],
            "v4.voip.test": [dns.Record_A("192.0.2.5")],
        }
        found: list[Any] = []
        done: list[bool] = []

        class Receiver:
            def resolutionBegan(self, resolution: Any) -> None:
                assert resolution.name == name

            def addressResolved(self, address: Any) -> None:
                found.append(address)

            def resolutionComplete(self) -> None:
                done.append(True)

        DNSHostnameResolver(zone(records)).resolveHostName(Receiver(), name, 5061, **kwargs)
        return found, bool(done)

    def test_a_and_aaaa(self) -> None:
        found, done = self.resolve(SRV_TARGET)
        self.assertTrue(done)
        self.assertEqual(
            sorted(map(repr, found)),
            sorted(
                [
                    repr(IPv4Address("TCP", "127.0.0.1", 5061)),
                    repr(IPv6Address("TCP", "::1", 5061)),
                ]
            ),
        )

    def test_only_requested_families(self) -> None:
        found, _ = self.resolve(SRV_TARGET, addressTypes=[IPv4Address])
        self.assertEqual(found, [IPv4Address("TCP", "127.0.0.1", 5061)])

    def test_missing_name_completes_empty(self) -> None:
        """NXDOMAIN / no A record: no address, and the resolution still completes (the
        endpoint then fails with a DNS lookup error naming the host)."""
        self.assertEqual(self.resolve("nothing.voip.test"), ([], True))
        self.assertEqual(self.resolve("v4.voip.test")[0], [IPv4Address("TCP", "192.0.2.5", 5061)])

    def test_literal_needs_no_dns(self) -> None:
        literal = IPv4Address("TCP", "192.0.2.9", 5061)
        self.assertEqual(self.resolve("192.0.2.9"), ([literal], True))


class EndpointWithLocatorTests(SynchronousTestCase):
    """RFC 3263 §4.3 failover over the SRV targets; RFC 5922 §4.1 identity for each."""

    def test_fails_over_to_next_srv_target(self) -> None:
        from tests.sip.test_connect import with_fake_targets

        records = {
            "_sips._tcp.voip.test": [
                srv(10, 0, 5061, SRV_TARGET),
                srv(20, 0, 5062, "backup.voip.test"),
            ]
        }
        events = capture_logs(self)
        aor = SipURI.parse("sips:alice@voip.test")
        endpoint = client_endpoint(reactor, aor, resolver=ServerLocator(zone(records)))
        attempts = with_fake_targets(endpoint, refuse={(SRV_TARGET, 5061)})
        self.successResultOf(
            endpoint.connect(tw_protocol.Factory.forProtocol(tw_protocol.Protocol))
        )
        self.assertEqual(attempts, [(SRV_TARGET, 5061), ("backup.voip.test", 5062)])
        self.assertEqual(endpoint.tried, ["kamailio.voip.test:5061", "backup.voip.test:5062"])
        self.assertEqual(endpoint.server_name, SIP_DOMAIN)
        info = lines(events, LogLevel.info)
        self.assertTrue(any("trying backup.voip.test:5062 next" in line for line in info), info)

    def test_all_srv_targets_refused(self) -> None:
        from tests.sip.test_connect import with_fake_targets

        records = {"_sips._tcp.voip.test": [srv(10, 0, 5061, "a"), srv(10, 0, 5061, "b")]}
        endpoint = client_endpoint(
            reactor, SipURI.parse("sips:alice@voip.test"), resolver=ServerLocator(zone(records))
        )
        with_fake_targets(endpoint, refuse={("a", 5061), ("b", 5061)})
        self.failureResultOf(
            endpoint.connect(tw_protocol.Factory.forProtocol(tw_protocol.Protocol)),
            ConnectionRefusedError,
        )

    def test_not_offered_fails_the_connect(self) -> None:
        records = {"_sips._tcp.voip.test": [srv(0, 0, 0, ROOT)]}
        endpoint = client_endpoint(
            reactor, SipURI.parse("sips:alice@voip.test"), resolver=ServerLocator(zone(records))
        )
        self.failureResultOf(
            endpoint.connect(tw_protocol.Factory.forProtocol(tw_protocol.Protocol)),
            ServiceNotOffered,
        )
        self.assertEqual(endpoint.tried, [])

    def test_dns_server_endpoint(self) -> None:
        """dns_server=: SRV and A/AAAA lookups go to that server only (not resolv.conf)."""
        endpoint = client_endpoint(
            reactor, SipURI.parse("sips:alice@voip.test"), dns_server=("127.0.0.1", 5353)
        )
        locator = endpoint.resolver
        self.assertIsInstance(locator, ServerLocator)
        self.assertEqual(locator.dns_resolver.servers, [("127.0.0.1", 5353)])
        self.assertIsNone(locator.dns_resolver.resolv)
        self.assertIs(endpoint.name_resolver, locator.hostname_resolver)
        self.assertIsNotNone(endpoint.name_resolver)

    def test_default_endpoint_uses_system_dns(self) -> None:
        """Without dns_server the locator asks the system's resolver (made at first use) and
        the targets' addresses come from the reactor's resolver."""
        endpoint = client_endpoint(reactor, SipURI.parse("sips:alice@voip.test"))
        self.assertIsInstance(endpoint.resolver, ServerLocator)
        self.assertIsNone(endpoint.name_resolver)


class TLSServer(tw_protocol.Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"hello")


class TLSClient(tw_protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(reason.value)


class SRVIdentityTLSTests(TestCase):
    """RFC 5922 §4.1: through DNS SRV, the certificate must name the SIP domain (voip.test);
    one valid only for the SRV target host (kamailio.voip.test) is refused."""

    timeout = 20

    async def connect(self, pair: Any) -> tuple[TLSClient, list[TLSVerificationFailed]]:
        with open(pair.cert, "rb") as c, open(pair.key, "rb") as k:
            cert = ssl.PrivateCertificate.loadPEM(c.read() + k.read())
        port = reactor.listenSSL(
            0, tw_protocol.Factory.forProtocol(TLSServer), cert.options(), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        records = {
            "_sips._tcp.voip.test": [srv(10, 0, port.getHost().port, SRV_TARGET)],
            SRV_TARGET: [dns.Record_A("127.0.0.1")],
        }
        endpoint = client_endpoint(
            reactor,
            SipURI.parse("sips:alice@voip.test"),
            ca_file=get_pki().ca_cert,
            resolver=ServerLocator(zone(records)),
        )
        seen: list[TLSVerificationFailed] = []
        endpoint.tls_failure_observers.append(seen.append)
        client = await endpoint.connect(tw_protocol.Factory.forProtocol(TLSClient))
        await client.lost
        return client, seen

    async def test_domain_certificate_accepted(self) -> None:
        client, seen = await self.connect(get_pki().sip_domain)
        self.assertEqual(client.received, b"hello")
        self.assertEqual(seen, [])

    async def test_srv_target_certificate_refused(self) -> None:
        client, seen = await self.connect(get_pki().srv_target)
        self.assertEqual(client.received, b"")
        self.assertEqual(len(seen), 1)
        self.assertIn("hostname mismatch", str(seen[0]))
        self.assertIn("'voip.test'", str(seen[0]))
