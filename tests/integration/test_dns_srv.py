"""The registrar found via DNS SRV (RFC 3263 §4.2, §4.3) with a real DNS server and Kamailio.

A ``twisted.names`` DNS server on 127.0.0.1 (UDP + TCP, run-time port) serves the zone
``voip.test``: ``_sips._tcp.voip.test SRV 10 0 <kamailio TLS port> kamailio.voip.test`` and
``kamailio.voip.test A 127.0.0.1``.  Our UA registers ``sips:alice@voip.test`` (no port)
with ``dns_server=`` pointing at it, over TLS with digest auth.  Kamailio's certificate is
issued for the SIP domain ``voip.test`` (RFC 5922 §4.1), not for the SRV target host.
"""

from __future__ import annotations

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
