"""``;transport=udp`` AORs register over UDP (RFC 3261 §18, RFC 3263, RFC 5626 §4.4.2)."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_datagram import FakeDatagramTransport
from voiptwisted.sip.connect import SIPClientService, SIPDatagramClientService, build_client
from voiptwisted.sip.datagram import READ_SIZE, DatagramKeepalive, SIPDatagramProtocol
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
