"""The registrar found via DNS SRV (RFC 3263 §4.2, §4.3) with a real DNS server and Kamailio.

A ``twisted.names`` DNS server on 127.0.0.1 (UDP + TCP, run-time port) serves the zone
``voip.test``: ``_sips._tcp.voip.test SRV 10 0 <kamailio TLS port> kamailio.voip.test`` and
``kamailio.voip.test A 127.0.0.1``.  Our UA registers ``sips:alice@voip.test`` (no port)
with ``dns_server=`` pointing at it, over TLS with digest auth.  Kamailio's certificate is
issued for the SIP domain ``voip.test`` (RFC 5922 §4.1), not for the SRV target host.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import reactor
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.names import dns
from twisted.trial.unittest import TestCase

from tests.integration.certs import SIP_DOMAIN, SRV_TARGET
from tests.integration.dnsserver import DNSServer, MemoryZone, start_dns_server
from tests.integration.peers import Kamailio, free_port
from tests.integration.test_registration import INSTANCE, eventually
from voiptwisted.sip.connect import TLSVerificationFailed, run
from voiptwisted.sip.datagram import SIPDatagramProtocol
from voiptwisted.sip.uri import SipURI

AOR = SipURI.parse(f"sips:alice@{SIP_DOMAIN}")


class DNSSRVRegistrationTests(TestCase):
    timeout = 90

    def kamailio(self, cert: str) -> Kamailio:
        kamailio = Kamailio(cert=cert, realm=SIP_DOMAIN)
        self.addCleanup(kamailio.cleanup)
        kamailio.start()
        return kamailio

    def dns_server(self, srv_records: list[dns.Record_SRV]) -> DNSServer:
        zone = MemoryZone(
            SIP_DOMAIN,
            {
                f"_sips._tcp.{SIP_DOMAIN}": srv_records,
                SRV_TARGET: [dns.Record_A("127.0.0.1")],
                f"down.{SIP_DOMAIN}": [dns.Record_A("127.0.0.1")],
            },
        )
        server = start_dns_server(reactor, zone)
        self.addCleanup(server.stop)
        return server

    def capture(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    async def register(self, kamailio: Kamailio, server: DNSServer) -> Any:
        protocol = await run(
            AOR,
            password="secret",
            ca_file=kamailio.ca_cert,
            instance_id=INSTANCE,
            dns_server=server.address,
            reactor=reactor,
        )
        self.addCleanup(protocol.service.stopService)
        return protocol

    async def test_register_via_srv(self) -> None:
        """RFC 3263 §4.2: no port in the AOR -> SRV _sips._tcp.voip.test -> the target's A
        record (from the same DNS server) -> TLS verified for voip.test -> digest REGISTER."""
        kamailio = self.kamailio("sip_domain")
        _, port = kamailio.address("tls")
        server = self.dns_server([dns.Record_SRV(10, 0, port, SRV_TARGET)])
        events = self.capture()
        protocol = await self.register(kamailio, server)
        self.assertTrue(protocol.service.registration.registered)
        self.assertTrue(protocol.is_secure)
        self.assertEqual(protocol.transport.getPeer().port, port)
        await eventually(lambda: kamailio.bindings("alice"), 15, "alice's binding")
        info = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.info]
        self.assertIn(f"DNS SRV _sips._tcp.voip.test: kamailio.voip.test:{port}", info)
        await protocol.service.stopService()
        await eventually(lambda: not kamailio.bindings("alice"), 15, "binding removed")

    async def test_fails_over_to_the_next_srv_target(self) -> None:
        """RFC 3263 §4.3: the first target (priority 10) refuses the connection; the next
        (priority 20) is tried and the registration succeeds there."""
        kamailio = self.kamailio("sip_domain")
        _, port = kamailio.address("tls")
        closed = free_port("tcp")
        server = self.dns_server(
            [
                dns.Record_SRV(20, 0, port, SRV_TARGET),
                dns.Record_SRV(10, 0, closed, f"down.{SIP_DOMAIN}"),
            ]
        )
        events = self.capture()
        protocol = await self.register(kamailio, server)
        self.assertEqual(
            protocol.service.endpoint.tried, [f"down.voip.test:{closed}", f"{SRV_TARGET}:{port}"]
        )
        self.assertEqual(protocol.transport.getPeer().port, port)
        await eventually(lambda: kamailio.bindings("alice"), 15, "alice's binding")
        info = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.info]
        self.assertTrue(any(f"trying {SRV_TARGET}:{port} next" in line for line in info), info)

    async def test_certificate_for_the_srv_target_refused(self) -> None:
        """RFC 5922 §4.1: the identity checked is the AOR's domain; a certificate valid only
        for the SRV target host (kamailio.voip.test) is refused, nothing is registered."""
        kamailio = self.kamailio("srv_target")
        _, port = kamailio.address("tls")
        server = self.dns_server([dns.Record_SRV(10, 0, port, SRV_TARGET)])
        with self.assertRaises(TLSVerificationFailed) as caught:
            await self.register(kamailio, server)
        self.assertIn("hostname mismatch", str(caught.exception))
        self.assertIn("'voip.test'", str(caught.exception))
        self.assertEqual(kamailio.bindings("alice"), [])


class NAPTRRegistrationTests(TestCase):
    """RFC 3263 §4.1 through a real DNS server: NAPTR chooses the transport of an AOR that
    names none (``sip:alice@voip.test``), then the SRV name it gives finds Kamailio."""

    timeout = 90

    def setUp(self) -> None:
        self.kamailio = Kamailio(cert="sip_domain", realm=SIP_DOMAIN)
        self.addCleanup(self.kamailio.cleanup)
        self.kamailio.start()

    def serve(self, naptr: list[dns.Record_NAPTR]) -> DNSServer:
        _, tls = self.kamailio.address("tls")
        _, tcp = self.kamailio.address("tcp")
        _, udp = self.kamailio.address("udp")
        zone = MemoryZone(
            SIP_DOMAIN,
            {
                SIP_DOMAIN: naptr,
                f"_sips._tcp.{SIP_DOMAIN}": [dns.Record_SRV(10, 0, tls, SRV_TARGET)],
                f"tcp.{SIP_DOMAIN}": [dns.Record_SRV(10, 0, tcp, SRV_TARGET)],
                f"udp.{SIP_DOMAIN}": [dns.Record_SRV(10, 0, udp, SRV_TARGET)],
                SRV_TARGET: [dns.Record_A("127.0.0.1")],
            },
        )
        server = start_dns_server(reactor, zone)
        self.addCleanup(server.stop)
        return server

    async def register(self, aor: str, server: DNSServer) -> Any:
        protocol = await run(
            SipURI.parse(aor),
            password="secret",
            ca_file=self.kamailio.ca_cert,
            instance_id=INSTANCE,
            dns_server=server.address,
            reactor=reactor,
        ).addTimeout(30, reactor)
        self.addCleanup(protocol.service.stopService)
        await eventually(lambda: self.kamailio.bindings("alice"), 15, "alice's binding")
        return protocol

    def registered_over(self) -> str:
        match = re.search(r"REGISTER saved alice from \S+/(\w+)", self.kamailio.log)
        assert match is not None, "Kamailio saved no REGISTER of alice"
        return match.group(1)

    async def test_naptr_udp_registers_over_udp(self) -> None:
        """RFC 3263 §4.1: SIP+D2U ranks first (order 10; SIP+D2T is 20): the UA registers
        over UDP at the target of the NAPTR replacement's SRV records."""
        server = self.serve([
            dns.Record_NAPTR(20, 10, b"s", b"SIP+D2T", b"", f"tcp.{SIP_DOMAIN}"),
            dns.Record_NAPTR(10, 10, b"s", b"SIP+D2U", b"", f"udp.{SIP_DOMAIN}"),
        ])
        protocol = await self.register(f"sip:alice@{SIP_DOMAIN}", server)
        self.assertIsInstance(protocol, SIPDatagramProtocol)
        self.assertEqual(protocol.peer, self.kamailio.address("udp"))
        self.assertEqual(self.registered_over(), "udp")

    async def test_naptr_tcp_by_preference(self) -> None:
        """RFC 3263 §4.1: same order, lower preference wins: SIP+D2T, a plain TCP flow."""
        server = self.serve([
            dns.Record_NAPTR(10, 20, b"s", b"SIP+D2U", b"", f"udp.{SIP_DOMAIN}"),
            dns.Record_NAPTR(10, 10, b"s", b"SIP+D2T", b"", f"tcp.{SIP_DOMAIN}"),
        ])
        protocol = await self.register(f"sip:alice@{SIP_DOMAIN}", server)
        self.assertFalse(protocol.is_secure)
        self.assertEqual(protocol.transport.getPeer().port, self.kamailio.address("tcp")[1])
        self.assertEqual(self.registered_over(), "tcp")

    async def test_sips_aor_stays_tls_rfc3263_4_1(self) -> None:
        """RFC 3263 §4.1: a sips: AOR discards the SIP+D2U record the domain prefers and
        registers over TLS (verified for voip.test) through the SIPS+D2T record."""
        server = self.serve([
            dns.Record_NAPTR(10, 10, b"s", b"SIP+D2U", b"", f"udp.{SIP_DOMAIN}"),
            dns.Record_NAPTR(20, 10, b"s", b"SIPS+D2T", b"", f"_sips._tcp.{SIP_DOMAIN}"),
        ])
        protocol = await self.register(f"sips:alice@{SIP_DOMAIN}", server)
        self.assertTrue(protocol.is_secure)
        self.assertEqual(self.registered_over(), "tls")
