"""``;transport=udp`` AORs register over UDP (RFC 3261 §18, RFC 3263, RFC 5626 §4.4.2)."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from tests.integration.dnsserver import MemoryZone
from tests.sip.test_datagram import FakeDatagramTransport
from voiptwisted.sip.connect import (
    SIPClientService,
    SIPDatagramClientService,
    TransportChoosingService,
    build_client,
)
from voiptwisted.sip.datagram import READ_SIZE, DatagramKeepalive, SIPDatagramProtocol
from voiptwisted.sip.keepalive import FlowKeepalive
from voiptwisted.sip.locate import ServerLocator
from voiptwisted.sip.message import Message, Response
from voiptwisted.sip.uri import SipURI


class UDPReactor(MemoryReactorClock):
    """A memory reactor that records ``listenUDP`` and binds a fake datagram transport."""

    def __init__(self) -> None:
        super().__init__()
        self.udp: list[tuple[int, Any, str, int]] = []
        self.transports: list[FakeDatagramTransport] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> FakeDatagramTransport:
        self.udp.append((port, protocol, interface, maxPacketSize))
        transport = FakeDatagramTransport(interface or "127.0.0.1", 40123)
        self.transports.append(transport)
        protocol.makeConnection(transport)
        return transport


class BuildClientUDPTests(SynchronousTestCase):
    def test_transport_udp_builds_datagram_client(self) -> None:
        """RFC 3261 §18: sip:...;transport=udp registers over UDP with the STUN keepalive."""
        service = build_client(
            SipURI.parse("sip:alice@127.0.0.1:5070;transport=udp"),
            password="secret", reactor=UDPReactor(),
        )
        self.assertIsInstance(service, SIPDatagramClientService)
        self.assertIsInstance(service.keepalive, DatagramKeepalive)

    def test_sips_is_never_downgraded(self) -> None:
        """RFC 3261 §26.2.2: a sips: AOR stays TLS whatever its transport parameter says."""
        service = build_client(
            SipURI.parse("sips:alice@127.0.0.1:5071;transport=udp"),
            password="secret", reactor=UDPReactor(),
        )
        self.assertIsInstance(service, SIPClientService)
        self.assertTrue(service.endpoint.is_tls)

    def test_registers_over_the_bound_socket(self) -> None:
        """The first RFC 3263 target is the flow's peer: the socket binds an ephemeral port
        for up to 65,535-octet datagrams, REGISTER goes there with a UDP Via asking for
        rport and a ;transport=udp Contact, and the 200 fires start() with the protocol."""
        reactor = UDPReactor()
        service = build_client(
            SipURI.parse("sip:alice@registrar.test;transport=udp"),
            password="secret", reactor=reactor,
            resolver=lambda aor: [("127.0.0.1", 5070)],
        )
        registered: list[Any] = []
        service.start().addCallback(registered.append)
        [(port, protocol, interface, size)] = reactor.udp
        self.assertEqual((port, interface, size), (0, "127.0.0.1", READ_SIZE))
        self.assertIsInstance(protocol, SIPDatagramProtocol)
        self.assertEqual(protocol.peer, ("127.0.0.1", 5070))
        [(data, addr)] = reactor.transports[0].written
        register = Message.parse(data)
        self.assertEqual((register.method, addr), ("REGISTER", ("127.0.0.1", 5070)))
        self.assertEqual((register.top_via.transport, register.top_via.rport), ("UDP", True))
        self.assertIn(";transport=udp", register.headers["Contact"])
        ok = Response.from_request(register, 200, to_tag="reg", headers=[
            ("Contact", register.headers["Contact"] + ";expires=3600"),
        ])
        via = str(register.top_via)
        ok.headers["Via"] = via.replace(";rport", ";rport=40123;received=127.0.0.1")
        protocol.datagramReceived(bytes(ok), ("127.0.0.1", 5070))
        self.assertEqual(registered, [protocol])
        self.assertEqual(service.endpoint.tried, ["127.0.0.1:5070"])
        stopped: list[Any] = []
        service.stopService().addCallback(stopped.append)
        [(unregister, _)] = reactor.transports[0].written[1:]
        self.assertIn(b"Expires: 0", unregister)

    def test_cancelling_start_closes_the_socket(self) -> None:
        """Issue 13: cancelling start() while the REGISTER is unanswered stops the UA once
        ``unregister_timeout`` has passed: the socket is closed, nothing is sent after."""
        from twisted.internet.defer import CancelledError

        reactor = UDPReactor()
        service = build_client(
            SipURI.parse("sip:alice@registrar.test;transport=udp"),
            password="secret", reactor=reactor,
            resolver=lambda aor: [("127.0.0.1", 5070)],
        )
        d = service.start()
        transport = reactor.transports[0]
        transport.stopListening = reactor.udp[0][1].doStop  # as a real port tells it
        self.assertEqual(len(transport.written), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        reactor.advance(service.registration.unregister_timeout)
        self.assertFalse(service.running)
        self.assertIsNone(service.port)
        sent = len(transport.written)
        reactor.advance(3600)
        self.assertEqual(len(transport.written), sent)
        self.assertEqual(reactor.getDelayedCalls(), [])

def naptr_zone(service: str, srv_name: str, port: int) -> MemoryZone:
    return MemoryZone("voip.test", {
        "voip.test": [dns.Record_NAPTR(10, 10, b"s", service.encode(), b"", srv_name)],
        srv_name: [dns.Record_SRV(0, 0, port, "registrar.voip.test")],
        "registrar.voip.test": [dns.Record_A("127.0.0.1")],
    })


class NAPTRClientTests(SynchronousTestCase):
    """RFC 3263 §4.1: an AOR naming no transport and no port gets the one NAPTR chooses."""

    def test_naptr_udp_registers_over_udp_rfc3263_4_1(self) -> None:
        """SIP+D2U: the UA binds a UDP socket to the target of the SRV name the NAPTR
        record gave (its address from the same DNS), and REGISTER goes there over UDP;
        the registration waited on before the choice is the one that completes."""
        reactor = UDPReactor()
        service = build_client(
            SipURI.parse("sip:alice@voip.test"), password="secret", reactor=reactor,
            resolver=ServerLocator(naptr_zone("SIP+D2U", "_sip._udp.voip.test", 5090)),
        )
        self.assertIsInstance(service, TransportChoosingService)
        waiting = service.registration.when_registered()
        registered: list[Any] = []
        service.start().addCallback(registered.append)
        self.assertIsInstance(service.inner, SIPDatagramClientService)
        self.assertIsInstance(service.keepalive, DatagramKeepalive)
        [(_, protocol, _, _)] = reactor.udp
        self.assertEqual(protocol.peer, ("127.0.0.1", 5090))
        [(data, addr)] = reactor.transports[0].written
        register = Message.parse(data)
        self.assertEqual((register.method, addr), ("REGISTER", ("127.0.0.1", 5090)))
        self.assertEqual(register.top_via.transport, "UDP")
        ok = Response.from_request(register, 200, to_tag="reg", headers=[
            ("Contact", register.headers["Contact"] + ";expires=3600"),
        ])
        protocol.datagramReceived(bytes(ok), ("127.0.0.1", 5090))
        self.assertEqual(registered, [protocol])
        self.assertEqual(self.successResultOf(waiting), protocol)

    def test_naptr_tcp_connects_without_tls_rfc3263_4_1(self) -> None:
        """SIP+D2T: a plain TCP flow to the NAPTR record's SRV target."""
        reactor = UDPReactor()
        service = build_client(
            SipURI.parse("sip:alice@voip.test"), password="secret", reactor=reactor,
            resolver=ServerLocator(naptr_zone("SIP+D2T", "tcp.voip.test", 5070)),
        )
        service.startService()
        self.assertIsInstance(service.inner, SIPClientService)
        self.assertFalse(service.endpoint.is_tls)
        self.assertIsInstance(service.keepalive, FlowKeepalive)
        self.assertEqual(service.endpoint.tried, ["registrar.voip.test:5070"])
        self.assertEqual(reactor.udp, [])

    def test_sips_aor_stays_tls_whatever_naptr_says_rfc3263_4_1(self) -> None:
        """A sips: AOR never takes the SIP+D2U record: TLS, via the _sips._tcp SRV name."""
        reactor = UDPReactor()
        service = build_client(
            SipURI.parse("sips:alice@voip.test"), password="secret", reactor=reactor,
            resolver=ServerLocator(naptr_zone("SIP+D2U", "_sip._udp.voip.test", 5090)),
        )
        service.startService()
        self.assertIsInstance(service.inner, SIPClientService)
        self.assertTrue(service.endpoint.is_tls)
        self.assertEqual(reactor.udp, [])

    def test_given_resolver_callable_skips_naptr(self) -> None:
        """A resolver that is not a ServerLocator keeps the AOR's transport (TLS)."""
        service = build_client(
            SipURI.parse("sip:alice@voip.test"), password="secret", reactor=UDPReactor(),
            resolver=lambda aor: [("127.0.0.1", 5061)],
        )
        self.assertIsInstance(service, SIPClientService)


class UDPFailoverTests(SynchronousTestCase):
    """RFC 3263 §4.3 over UDP: 503/408/no answer move the socket's peer to the next target."""

    def setUp(self) -> None:
        self.reactor = UDPReactor()
        self.service = build_client(
            SipURI.parse("sip:alice@registrar.test;transport=udp"),
            password="secret", reactor=self.reactor, keepalive=None,
            resolver=lambda aor: [("127.0.0.1", 5070), ("127.0.0.1", 5080)],
        )
        self.registered: list[Any] = []
        self.service.start().addCallback(self.registered.append)
        [(_, self.protocol, _, _)] = self.reactor.udp
        self.transport = self.reactor.transports[0]

    def sent(self) -> list[tuple[Any, tuple[str, int]]]:
        out = [(Message.parse(data), addr) for data, addr in self.transport.written]
        self.transport.written.clear()
        return out

    def answer(self, register: Any, code: int, *headers: tuple[str, str]) -> None:
        extra = list(headers)
        if code == 200:
            extra.append(("Contact", register.headers["Contact"] + ";expires=3600"))
        response = Response.from_request(register, code, to_tag="reg", headers=extra)
        self.protocol.datagramReceived(bytes(response), self.protocol.peer)

    def test_503_moves_to_the_next_target_rfc3263_4_3(self) -> None:
        """A 503 from the first target: the next REGISTER goes to the second, which
        registers us."""
        [(register, addr)] = self.sent()
        self.assertEqual(addr, ("127.0.0.1", 5070))
        self.answer(register, 503)
        self.reactor.advance(0)
        [(register, addr)] = self.sent()
        self.assertEqual((register.method, addr), ("REGISTER", ("127.0.0.1", 5080)))
        self.assertEqual(self.protocol.peer, ("127.0.0.1", 5080))
        self.answer(register, 200)
        self.assertEqual(self.registered, [self.protocol])
        self.assertEqual(self.service.endpoint.tried, ["127.0.0.1:5070", "127.0.0.1:5080"])

    def test_408_moves_to_the_next_target_rfc3263_4_3(self) -> None:
        """A 408 from the first target moves on too."""
        [(register, _)] = self.sent()
        self.answer(register, 408)
        self.reactor.advance(0)
        [(_, addr)] = self.sent()
        self.assertEqual(addr, ("127.0.0.1", 5080))

    def test_no_answer_moves_to_the_next_target_rfc3263_4_3(self) -> None:
        """No answer at all (Timer F, 64*T1): the next target is tried."""
        self.reactor.advance(32.5)
        self.reactor.advance(0)
        addrs = [addr for _, addr in self.sent()]
        self.assertEqual(addrs[-1], ("127.0.0.1", 5080))
        self.assertEqual(set(addrs[:-1]), {("127.0.0.1", 5070)})

    def test_retry_after_target_skipped_until_it_expires_rfc3261_21_5_4(self) -> None:
        """503 with Retry-After: 60 from the first: while it runs, a 503 from the second
        does not send us back (the second is retried after its own delay); once it has
        passed, a 503 to a refresh moves us to the first again."""
        [(register, _)] = self.sent()
        self.answer(register, 503, ("Retry-After", "60"))
        self.reactor.advance(0)
        [(register, addr)] = self.sent()
        self.assertEqual(addr, ("127.0.0.1", 5080))
        self.answer(register, 503, ("Retry-After", "5"))
        self.reactor.advance(0)
        self.assertEqual(self.sent(), [])
        self.reactor.advance(5)
        [(register, addr)] = self.sent()
        self.assertEqual(addr, ("127.0.0.1", 5080))
        self.answer(register, 200)
        self.assertEqual(self.registered, [self.protocol])
        self.reactor.advance(3600)  # the refresh, long after the first's Retry-After
        [(register, addr)] = self.sent()
        self.assertEqual(addr, ("127.0.0.1", 5080))
        self.answer(register, 503)
        self.reactor.advance(0)
        [(_, addr)] = self.sent()
        self.assertEqual(addr, ("127.0.0.1", 5070))


class TransportChoosingStopTests(SynchronousTestCase):
    def test_stopped_while_choosing_starts_nothing(self) -> None:
        """Stopped before the NAPTR answer: no flow is built or started afterwards, and
        start() fails instead of firing."""
        from twisted.internet.defer import Deferred

        class Pending:
            def __init__(self) -> None:
                self.answer: Deferred[Any] = Deferred()

            def lookupNamingAuthorityPointer(self, name: str, timeout: Any = None) -> Any:
                return self.answer

        dns_resolver = Pending()
        reactor = UDPReactor()
        service = build_client(
            SipURI.parse("sip:alice@voip.test"), password="secret", reactor=reactor,
            resolver=ServerLocator(dns_resolver),
        )
        started = service.start()
        self.successResultOf(service.stopService())
        dns_resolver.answer.callback(([], [], []))
        self.failureResultOf(started, RuntimeError)
        self.assertEqual((reactor.udp, reactor.tcpClients), ([], []))

    def test_cancelled_while_choosing_starts_nothing(self) -> None:
        """Issue 13: cancelling start() before the NAPTR answer fails it with
        CancelledError, and the answer that comes later builds no flow."""
        from twisted.internet.defer import CancelledError, Deferred

        class Pending:
            def __init__(self) -> None:
                self.answer: Deferred[Any] = Deferred()

            def lookupNamingAuthorityPointer(self, name: str, timeout: Any = None) -> Any:
                return self.answer

        dns_resolver = Pending()
        reactor = UDPReactor()
        service = build_client(
            SipURI.parse("sip:alice@voip.test"), password="secret", reactor=reactor,
            resolver=ServerLocator(dns_resolver),
        )
        started = service.start()
        started.cancel()
        self.failureResultOf(started, CancelledError)
        self.assertFalse(service.running)
        dns_resolver.answer.callback(([], [], []))
        self.assertEqual((reactor.udp, reactor.tcpClients), ([], []))
