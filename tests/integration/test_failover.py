"""RFC 3263 §4.3 failover against real servers: two Kamailio instances behind a test DNS.

The zone ``voip.test`` (a ``twisted.names`` server on 127.0.0.1) lists two servers for each
transport -- ``_sips._tcp`` and ``_sip._udp`` SRV records, priority 10 for ``bad.voip.test``
(a Kamailio answering 503 or 408 to REGISTER and/or INVITE) and 20 for ``good.voip.test`` (a
plain Kamailio registrar and proxy).  Our UA must move from the first to the second: for
REGISTER on 503 (with and without Retry-After; a Retry-After server is then skipped until it
expires), 408 and no answer at all (UDP), and for an initial INVITE on 503 and 408, over TLS
and over UDP.  (A TLS server refusing the connection is
``test_dns_srv.test_fails_over_to_the_next_srv_target``.)
"""

from __future__ import annotations

import pathlib
import re
import tempfile
from typing import Any

from twisted.internet import reactor, threads
from twisted.names import dns
from twisted.trial.unittest import TestCase

from tests.integration.certs import SIP_DOMAIN
from tests.integration.dnsserver import MemoryZone, start_dns_server
from tests.integration.peers import Kamailio, Sipp, free_port
from tests.integration.support import eventually, sleep
from tests.integration.test_registration import INSTANCE
from voiptwisted.service import ServiceConfig, VoIPService
from voiptwisted.sip.connect import run
from voiptwisted.sip.uri import SipURI

BAD, GOOD = f"bad.{SIP_DOMAIN}", f"good.{SIP_DOMAIN}"


def registers(kamailio: Kamailio) -> int:
    """How many REGISTER requests *kamailio* received."""
    return len(re.findall(r"REQ REGISTER ", kamailio.log))


class FailoverTestCase(TestCase):
    timeout = 120

    def start_servers(self, reject: tuple[int, int | None], methods: tuple[str, ...]) -> None:
        """The failing server (``bad``), the working one (``good``) and the DNS naming them
        in that order for TLS and UDP."""
        self.bad = Kamailio(cert="sip_domain", realm=SIP_DOMAIN, reject=reject,
                            reject_methods=methods)
        self.good = Kamailio(cert="sip_domain", realm=SIP_DOMAIN)
        for kamailio in (self.bad, self.good):
            self.addCleanup(kamailio.cleanup)
            kamailio.start()
        zone = MemoryZone(
            SIP_DOMAIN,
            {
                f"_sips._tcp.{SIP_DOMAIN}": [
                    dns.Record_SRV(10, 0, self.bad.tls_port, BAD),
                    dns.Record_SRV(20, 0, self.good.tls_port, GOOD),
                ],
                f"_sip._udp.{SIP_DOMAIN}": [
                    dns.Record_SRV(10, 0, self.bad.udp_port, BAD),
                    dns.Record_SRV(20, 0, self.good.udp_port, GOOD),
                ],
                BAD: [dns.Record_A("127.0.0.1")],
                GOOD: [dns.Record_A("127.0.0.1")],
            },
        )
        self.dns_zone = zone
        self.dns = start_dns_server(reactor, zone)
        self.addCleanup(self.dns.stop)

    async def register(self, aor: str) -> Any:
        protocol = await run(
            SipURI.parse(aor),
            password="secret",
            ca_file=self.good.ca_cert,
            instance_id=INSTANCE,
            dns_server=self.dns.address,
            reactor=reactor,
            keepalive=None,
        ).addTimeout(90, reactor)
        self.addCleanup(protocol.service.stopService)
        await eventually(lambda: self.good.bindings("alice"), 15, "alice's binding at good")
        return protocol


class RegisterFailoverTests(FailoverTestCase):
    """REGISTER moves to the next RFC 3263 server on 503/408 (RFC 3263 §4.3)."""

    async def test_503_moves_register_to_the_next_server_tls(self) -> None:
        """RFC 3263 §4.3: bad answers 503 (no Retry-After): we register at good over TLS.
        Without Retry-After bad is only tried last once: when good's flow breaks (restart),
        the next connect tries bad first again, then good."""
        self.start_servers((503, None), ("REGISTER",))
        protocol = await self.register(f"sips:alice@{SIP_DOMAIN}")
        self.assertTrue(protocol.is_secure)
        self.assertEqual(protocol.transport.getPeer().port, self.good.tls_port)
        self.assertEqual(registers(self.bad), 1)
        self.assertEqual(self.bad.bindings("alice"), [])
        await threads.deferToThread(self.good.restart)
        await eventually(lambda: registers(self.bad) == 2, 30, "bad to be tried again")
        await eventually(lambda: self.good.bindings("alice"), 30, "alice back at good")

    async def test_retry_after_server_skipped_until_it_expires_tls(self) -> None:
        """RFC 3263 §4.3, RFC 3261 §21.5.4: bad answers 503 with Retry-After: 3600; when
        good's flow breaks, the reconnect goes straight back to good: bad is skipped."""
        self.start_servers((503, 3600), ("REGISTER",))
        await self.register(f"sips:alice@{SIP_DOMAIN}")
        self.assertEqual(registers(self.bad), 1)
        before = registers(self.good)
        await threads.deferToThread(self.good.restart)
        await eventually(lambda: registers(self.good) > before, 30, "a REGISTER at good")
        await eventually(lambda: self.good.bindings("alice"), 30, "alice back at good")
        self.assertEqual(registers(self.bad), 1)

    async def test_408_moves_register_to_the_next_server_tls(self) -> None:
        """RFC 3263 §4.3: a 408 from bad moves the registration to good too."""
        self.start_servers((408, None), ("REGISTER",))
        protocol = await self.register(f"sips:alice@{SIP_DOMAIN}")
        self.assertEqual(protocol.transport.getPeer().port, self.good.tls_port)
        self.assertEqual(registers(self.bad), 1)

    async def test_503_moves_register_to_the_next_server_udp(self) -> None:
        """RFC 3263 §4.3 over UDP: bad's 503 with Retry-After moves the socket's peer to
        good (_sip._udp priority 20), where we register."""
        self.start_servers((503, 60), ("REGISTER",))
        protocol = await self.register(f"sip:alice@{SIP_DOMAIN};transport=udp")
        self.assertEqual(protocol.peer, ("127.0.0.1", self.good.udp_port))
        self.assertEqual(protocol.service.endpoint.tried,
                         [f"{BAD}:{self.bad.udp_port}", f"{GOOD}:{self.good.udp_port}"])
        self.assertEqual(registers(self.bad), 1)

    async def test_408_moves_register_to_the_next_server_udp(self) -> None:
        """RFC 3263 §4.3 over UDP: a 408 from bad moves us to good."""
        self.start_servers((408, None), ("REGISTER",))
        protocol = await self.register(f"sip:alice@{SIP_DOMAIN};transport=udp")
        self.assertEqual(protocol.peer, ("127.0.0.1", self.good.udp_port))


class InviteFailoverTests(FailoverTestCase):
    """An initial INVITE refused 503 by our server moves the flow to the next server, which
    registers us and carries the call (RFC 3263 §4.3; ``VoIPService.place_call``)."""

    async def call_through_failover(
        self, aor: str, reject: tuple[int, int | None] = (503, None)
    ) -> None:
        self.start_servers(reject, ("INVITE",))
        uas = Sipp("uas", service="bob", timeout=30)
        self.addCleanup(uas.cleanup)
        uas.start()
        register = Sipp(
            "register", self.good.address("udp"), service="bob", auth=("bob", "secret"),
            keys={"contact_host": "127.0.0.1", "contact_port": uas.local_port, "expires": 60},
            timeout=10,
        )
        self.addCleanup(register.cleanup)
        result = await threads.deferToThread(register.run, 15)
        self.assertTrue(result.ok, result.errors[-2000:])
        state = pathlib.Path(tempfile.mkdtemp(prefix="failover-"))
        service = VoIPService(
            ServiceConfig(
                aor=SipURI.parse(aor), password="secret", ca_file=self.good.ca_cert,
                dns_server=self.dns.address, srtp="off", keepalive=0, state_dir=state,
                rtp_ports=(37000, 37400),
            ),
            reactor=reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        dialog = await service.place_call(f"sip:bob@{SIP_DOMAIN}").addTimeout(60, reactor)
        self.assertEqual(len(re.findall(r"REQ INVITE sip:bob@", self.bad.log)), 1)
        self.assertEqual(len(re.findall(r"REQ INVITE sip:bob@", self.good.log)), 1)
        self.assertTrue(self.good.bindings("alice"))
        await sleep(0.2)
        await dialog.bye()
        await eventually(lambda: not uas.running, 15, "SIPp UAS to finish")
        self.assertTrue(uas.collect().ok)

    async def test_invite_503_moves_the_call_to_the_next_server_tls(self) -> None:
        """RFC 3263 §4.3: registered at bad over TLS, our INVITE gets 503: the flow moves
        to good, registers there and the call to bob (a SIPp UAS) is placed and answered."""
        await self.call_through_failover(f"sip:alice@{SIP_DOMAIN}")

    async def test_invite_503_moves_the_call_to_the_next_server_udp(self) -> None:
        """RFC 3263 §4.3 over UDP: the same with the socket's peer moving to good."""
        await self.call_through_failover(f"sip:alice@{SIP_DOMAIN};transport=udp")

    async def test_invite_408_moves_the_call_to_the_next_server_udp(self) -> None:
        """RFC 3263 §4.3 over UDP: a 408 to the INVITE moves the call as well."""
        await self.call_through_failover(f"sip:alice@{SIP_DOMAIN};transport=udp", (408, None))

    async def test_invite_503_retry_after_moves_the_call_tls(self) -> None:
        """RFC 3263 §4.3: a 503 with Retry-After to the INVITE moves the call over TLS."""
        await self.call_through_failover(f"sip:alice@{SIP_DOMAIN}", (503, 120))


class SilentServerFailoverTests(FailoverTestCase):
    """A first server that never answers (nothing listens on its UDP port)."""

    timeout = 150

    async def test_no_answer_moves_register_to_the_next_server_udp(self) -> None:
        """RFC 3263 §4.3 over UDP: REGISTER to a port where nothing listens gets no answer;
        after Timer F (64*T1 = 32 s, RFC 3261 §17.1.2.2) the next server registers us."""
        self.start_servers((503, None), ("REGISTER",))
        silent = free_port("udp")
        zone_records = self.dns_zone.records
        zone_records[f"_sip._udp.{SIP_DOMAIN}".encode()] = [
            dns.Record_SRV(10, 0, silent, BAD, ttl=60),
            dns.Record_SRV(20, 0, self.good.udp_port, GOOD, ttl=60),
        ]
        protocol = await self.register(f"sip:alice@{SIP_DOMAIN};transport=udp")
        self.assertEqual(protocol.peer, ("127.0.0.1", self.good.udp_port))
        self.assertEqual(protocol.service.endpoint.tried,
                         [f"{BAD}:{silent}", f"{GOOD}:{self.good.udp_port}"])
        self.assertEqual(registers(self.bad), 0)
