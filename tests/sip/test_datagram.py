"""Tests for voiptwisted.sip.datagram: SIP over UDP (RFC 3261 §18, RFC 3581, RFC 5626 §4.4.2).

A fake datagram transport collects ``write(data, addr)``; time is a ``task.Clock``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_dialog import CONFIG, callee_class, invite_bytes, make_media_class
from voiptwisted.rtp.stun import (
    ATTR_XOR_MAPPED_ADDRESS,
    BINDING_SUCCESS,
    StunMessage,
    address_attribute,
)
from voiptwisted.sip.datagram import (
    MAX_DATAGRAM,
    DatagramKeepalive,
    SIPDatagramProtocol,
    stamp_via,
)
from voiptwisted.sip.message import Message, Request, Response
from voiptwisted.sip.transaction import T1, T2, T4

SOURCE = ("192.0.2.7", 40000)


class FakeDatagramTransport:
    """What ``reactor.listenUDP`` gives a DatagramProtocol, reduced to what SIP uses."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5060) -> None:
        self.host = IPv4Address("UDP", host, port)
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.stopped = False

    def getHost(self) -> IPv4Address:
        return self.host

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))

    def stopListening(self) -> None:
        self.stopped = True


def udp_invite(via_host: str = "192.0.2.7:40000", rport: bool = True, **kwargs: Any) -> bytes:
    data = invite_bytes(**kwargs)
    via = f"SIP/2.0/UDP {via_host};branch={kwargs.get('branch', 'z9hG4bKinv1')}"
    if rport:
        via += ";rport"
    head, rest = data.split(b"\r\n", 1)
    _, rest = rest.split(b"\r\n", 1)
    return head + b"\r\nVia: " + via.encode() + b"\r\n" + rest


class DatagramTestCase(SynchronousTestCase):
    callee_action = "ring"

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.callee = callee_class(self.callee_action)
        self.proto = SIPDatagramProtocol(
            aor="sip:bob@127.0.0.1",
            reactor=self.clock,
            dialog_class=self.callee,
            media_class=make_media_class(),
            media_config=CONFIG,
            **self.extra(),
        )
        self.transport = FakeDatagramTransport()
        self.proto.makeConnection(self.transport)

    def extra(self) -> dict[str, Any]:
        return {}

    def take(self) -> list[tuple[Request | Response, tuple[str, int]]]:
        out = [(Message.parse(data), addr) for data, addr in self.transport.written]
        self.transport.written.clear()
        return out


class BoundsTests(DatagramTestCase):
    def test_oversized_datagram_dropped(self) -> None:
        """RFC 3261 §18.3: nothing over 65,535 octets is taken from a datagram."""
        pad = "X-Pad: " + "a" * MAX_DATAGRAM + "\r\n"
        data = udp_invite(method="OPTIONS", body=b"", extra=pad)
        self.proto.datagramReceived(data, SOURCE)
        self.assertEqual((self.transport.written, self.proto.dropped), ([], 1))

    def test_content_length_beyond_datagram_request_400(self) -> None:
        """RFC 3261 §18.3: a request whose Content-Length exceeds the datagram is an error:
        400 to its source."""
        data = udp_invite().replace(b"Content-Length: ", b"Content-Length: 9")
        self.proto.datagramReceived(data, SOURCE)
        [(response, addr)] = self.take()
        self.assertEqual((response.status_code, addr), (400, SOURCE))
        self.assertEqual(self.callee.instances, [])

    def test_content_length_beyond_datagram_response_dropped(self) -> None:
        """RFC 3261 §18.3: such a response is discarded."""
        data = (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\n"
            b"CSeq: 1 OPTIONS\r\nContent-Length: 50\r\n\r\nshort"
        )
        self.proto.datagramReceived(data, SOURCE)
        self.assertEqual((self.transport.written, self.proto.dropped), ([], 1))

    def test_octets_beyond_content_length_discarded(self) -> None:
        """RFC 3261 §18.3: octets after the Content-Length body are discarded."""
        data = udp_invite(method="OPTIONS", body=b"") + b"garbage"
        self.proto.datagramReceived(data, SOURCE)
        [(response, _)] = self.take()
        self.assertEqual(response.status_code, 200)


class FloodTests(DatagramTestCase):
    def test_transaction_table_bounded(self) -> None:
        """A flood of new requests over UDP (each would linger 64*T1, RFC 3261 §17.2.2)
        stops growing the transaction table at max_transactions; retransmissions of
        known requests are still answered."""
        self.proto.max_transactions = 2
        for n in range(3):
            data = udp_invite(method="OPTIONS", body=b"", branch=f"z9hG4bKflood{n}")
            self.proto.datagramReceived(data, SOURCE)
        self.assertEqual((len(self.take()), self.proto.transaction_count), (2, 2))
        self.assertEqual(self.proto.dropped, 1)
        self.proto.datagramReceived(
            udp_invite(method="OPTIONS", body=b"", branch="z9hG4bKflood0"), SOURCE
        )
        self.assertEqual([m.status_code for m, _ in self.take()], [200])
        self.clock.advance(64 * T1)
        self.assertEqual(self.proto.transaction_count, 0)


class ViaTests(DatagramTestCase):
    def test_rport_and_received_on_response(self) -> None:
        """RFC 3581 §4: a request with ``rport`` gets received and rport filled in, and the
        response goes to the source IP and port (RFC 3261 §18.2.2)."""
        self.proto.datagramReceived(udp_invite(method="OPTIONS", body=b""), ("192.0.2.9", 41234))
        [(response, addr)] = self.take()
        via = response.top_via
        self.assertEqual((via.received, via.rport), ("192.0.2.9", 41234))
        self.assertEqual(addr, ("192.0.2.9", 41234))

    def test_received_for_host_name_sent_by(self) -> None:
        """RFC 3261 §18.2.1: a sent-by host name differs from the source: received is added,
        and without rport the response goes to received at the sent-by port (§18.2.2)."""
        data = udp_invite(via_host="ua.example.com:5080", rport=False, method="OPTIONS", body=b"")
        self.proto.datagramReceived(data, SOURCE)
        [(response, addr)] = self.take()
        self.assertEqual(response.top_via.received, SOURCE[0])
        self.assertIsNone(response.top_via.rport)
        self.assertEqual(addr, (SOURCE[0], 5080))

    def test_no_port_defaults_to_5060(self) -> None:
        """RFC 3261 §18.2.2: no rport and no sent-by port: port 5060."""
        data = udp_invite(via_host="192.0.2.7", rport=False, method="OPTIONS", body=b"")
        self.proto.datagramReceived(data, SOURCE)
        [(response, addr)] = self.take()
        self.assertNotIn("received", response.top_via.params)
        self.assertEqual(addr, ("192.0.2.7", 5060))

    def test_stamp_via_keeps_lower_vias(self) -> None:
        data = udp_invite(method="OPTIONS", body=b"").replace(
            b"Max-Forwards", b"Via: SIP/2.0/UDP proxy.example;branch=z9hG4bKp\r\nMax-Forwards"
        )
        request = Message.parse(data)
        stamp_via(request, ("192.0.2.1", 1))
        self.assertEqual([v.host for v in request.via], ["192.0.2.7", "proxy.example"])
        self.assertEqual(request.branch, "z9hG4bKinv1")

    def test_our_requests_carry_udp_via_with_rport(self) -> None:
        """RFC 3581 §3: our requests ask for rport; Via and Contact name UDP."""
        self.proto.peer = ("127.0.0.1", 5070)
        request = Request("OPTIONS", "sip:x@127.0.0.1:5070", [
            ("From", "<sip:bob@127.0.0.1>;tag=1"), ("To", "<sip:x@127.0.0.1>"),
            ("Call-ID", "c1"), ("CSeq", "1 OPTIONS"),
        ])
        self.proto.send_request(request)
        [(sent, addr)] = self.take()
        self.assertEqual(addr, ("127.0.0.1", 5070))
        via = sent.top_via
        self.assertEqual((via.transport, via.rport, via.host), ("UDP", True, "127.0.0.1"))
        self.assertIn(";transport=udp", self.proto.contact)


class SendFailureTests(DatagramTestCase):
    def test_send_error_is_logged_not_raised(self) -> None:
        """A UDP send that fails (EMSGSIZE, unreachable) is logged; the transaction goes on
        and its timers decide (RFC 3261 §17.1.4 would report a transport error)."""
        from twisted.internet.error import MessageLengthError

        def refuse(data: bytes, addr: tuple[str, int]) -> None:
            raise MessageLengthError("message too long")

        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.transport.write = refuse  # type: ignore[method-assign]
        self.proto.datagramReceived(udp_invite(method="OPTIONS", body=b""), SOURCE)
        self.assertEqual([e for e in events if "log_failure" in e], [])
        self.assertTrue(any("UDP send" in e.get("log_format", "") for e in events))
        self.assertEqual(self.proto.transaction_count, 1)


class FakeStreamConnector:
    """Records the TCP connects of RFC 3261 §18.1.1; the test decides how each ends."""

    def __init__(self) -> None:
        self.attempts: list[tuple[tuple[str, int], Any, Deferred[Any]]] = []

    def __call__(self, target: tuple[str, int], protocol: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append((target, protocol, d))
        return d

    def accept(self, index: int = -1) -> StringTransport:
        _, protocol, d = self.attempts[index]
        transport = StringTransport()
        protocol.makeConnection(transport)
        d.callback(protocol)
        return transport

    def refuse(self, index: int = -1) -> None:
        self.attempts[index][2].errback(ConnectionRefusedError("Connection refused"))


def big_request(method: str = "OPTIONS", size: int = 1400) -> Request:
    headers = [("From", "<sip:bob@127.0.0.1>;tag=1"), ("To", "<sip:x@127.0.0.1>"),
               ("Call-ID", "big"), ("CSeq", f"1 {method}")]
    return Request(method, "sip:x@127.0.0.1", headers, b"x" * size)


class LargeRequestTests(DatagramTestCase):
    """RFC 3261 §18.1.1: a request over 1300 octets (path MTU unknown) goes over TCP to the
    same destination; UDP only when TCP cannot be had."""

    def extra(self) -> dict[str, Any]:
        self.connector = FakeStreamConnector()
        return {"stream_connector": self.connector}

    def setUp(self) -> None:
        super().setUp()
        self.proto.peer = ("127.0.0.1", 5070)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def warnings(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "§18.1.1" in e.get("log_format", "")
                and e.get("log_level") == LogLevel.warn]

    def test_request_over_1300_octets_goes_over_tcp_rfc3261_18_1_1(self) -> None:
        """§18.1.1: the large request is written on a TCP connection to the same address and
        port, its Via says TCP (same branch), nothing goes over UDP, and its response coming
        back on that connection completes the transaction."""
        results: list[Response] = []
        self.proto.send_request(big_request()).addCallback(results.append)
        [(target, _, _)] = self.connector.attempts
        self.assertEqual(target, ("127.0.0.1", 5070))
        stream = self.connector.accept()
        self.assertEqual(self.take(), [])
        sent = Message.parse(stream.value())
        assert isinstance(sent, Request)
        self.assertEqual(sent.top_via.protocol, "SIP/2.0/TCP")
        self.assertEqual(len(sent.body), 1400)
        # Timer E fires: TCP already delivers, so no copy goes anywhere.
        stream.clear()
        self.clock.advance(T1)
        self.assertEqual((stream.value(), self.take()), (b"", []))
        response = (
            f"SIP/2.0 200 OK\r\nVia: {sent.headers['Via']}\r\n"
            f"From: <sip:bob@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>;tag=2\r\n"
            f"Call-ID: big\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self.connector.attempts[0][1].dataReceived(response)
        self.assertEqual([r.status_code for r in results], [200])
        self.assertEqual(self.warnings(), [])

    def test_idle_tcp_connection_closed(self) -> None:
        """The TCP connection of §18.1.1 is closed after STREAM_IDLE_TIMEOUT seconds without
        a byte either way (bounded: a peer never closing it does not keep it forever); the
        next large request opens a new one."""
        from voiptwisted.sip.datagram import STREAM_IDLE_TIMEOUT

        timeouts: list[Any] = []
        self.proto.send_request(big_request()).addErrback(timeouts.append)
        stream = self.connector.accept()
        leg = self.connector.attempts[0][1]
        self.clock.advance(STREAM_IDLE_TIMEOUT - 1)
        leg.dataReceived(b"\r\n\r\n")  # bytes from the peer: the timer starts over
        self.clock.advance(STREAM_IDLE_TIMEOUT - 1)
        self.assertFalse(stream.disconnecting)
        self.clock.advance(1)
        self.assertTrue(stream.disconnecting)
        leg.connectionLost()
        self.assertEqual(len(timeouts), 1)  # Timer F: TCP answered nothing
        self.proto.send_request(big_request("INFO"))
        self.assertEqual(len(self.connector.attempts), 2)

    def test_stream_response_address_not_learned_rfc3581(self) -> None:
        """A response over the §18.1.1 TCP connection carries that connection's
        received/rport: the core (and the registration learning our public address from
        the Via, RFC 3581) gets it without them, so the UDP Contact stays."""
        results: list[Response] = []
        request = big_request("REGISTER")
        self.proto.send_request(request).addCallback(results.append)
        stream = self.connector.accept()
        sent = Message.parse(stream.value())
        via = f"{sent.headers['Via']}".replace(";rport", ";received=127.0.0.1;rport=45678")
        response = (
            f"SIP/2.0 200 OK\r\nVia: {via}\r\n"
            f"From: <sip:bob@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>;tag=2\r\n"
            f"Call-ID: big\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self.connector.attempts[0][1].dataReceived(response)
        [ok] = results
        self.assertNotIn("rport", ok.top_via.params)
        self.assertNotIn("received", ok.top_via.params)

    def test_small_request_stays_on_udp(self) -> None:
        """§18.1.1: at or under 1300 octets a request goes over UDP as usual."""
        self.proto.send_request(big_request(size=200))
        self.assertEqual(self.connector.attempts, [])
        self.assertEqual(len(self.take()), 1)

    def test_tcp_refused_falls_back_to_udp_rfc3261_18_1_1(self) -> None:
        """§18.1.1: when the TCP connection is refused (a peer that only does UDP) the request
        goes over UDP with its UDP Via, with one warning; its retransmissions stay on UDP,
        and the next large request to that peer goes over UDP without trying TCP again."""
        self.proto.send_request(big_request())
        self.connector.refuse()
        [(sent, addr)] = self.take()
        self.assertEqual(addr, ("127.0.0.1", 5070))
        self.assertEqual(sent.top_via.protocol, "SIP/2.0/UDP")
        self.assertEqual(len(self.warnings()), 1)
        self.clock.advance(T1)
        self.assertEqual(len(self.take()), 1)  # Timer E retransmission, over UDP
        self.proto.send_request(big_request("INFO"))
        self.assertEqual(len(self.connector.attempts), 1)
        self.assertEqual(len(self.take()), 1)

    def test_cancel_follows_the_invite_over_tcp_rfc3261_9_1(self) -> None:
        """§9.1: a CANCEL goes to the same destination and transport as its INVITE: the
        connection the large INVITE took, though the CANCEL itself is small."""
        invite = big_request("INVITE")
        invite.headers["Contact"] = "<sip:bob@127.0.0.1:5060>"
        self.proto.start_client_transaction(invite)
        stream = self.connector.accept()
        self.assertEqual(self.take(), [])
        sent = Message.parse(stream.value())
        stream.clear()
        cancel = Request("CANCEL", invite.uri, [
            ("Via", str(invite.headers["Via"])), ("From", invite.headers["From"]),
            ("To", invite.headers["To"]), ("Call-ID", "big"), ("CSeq", "1 CANCEL"),
        ])
        self.proto.start_client_transaction(cancel, new_branch=False)
        self.assertEqual(self.take(), [])
        self.assertEqual(Message.parse(stream.value()).method, "CANCEL")
        self.assertEqual(sent.branch, Message.parse(stream.value()).branch)


class RequestRoutingTests(DatagramTestCase):
    def test_request_to_route_then_uri(self) -> None:
        """RFC 3261 §8.1.2: without a flow peer a request goes to the top Route, else the
        Request-URI (port 5060 by default), a host name resolved first."""
        resolved: list[str] = []

        def resolve(name: str) -> Any:
            resolved.append(name)
            return succeed("192.0.2.44")

        self.proto._resolve = resolve
        base = [("From", "<sip:bob@127.0.0.1>;tag=1"), ("To", "<sip:x@h>"),
                ("Call-ID", "c"), ("CSeq", "1 OPTIONS")]
        self.proto.send_request(Request("OPTIONS", "sip:x@192.0.2.5:5099", list(base)))
        self.proto.send_request(
            Request("OPTIONS", "sip:x@192.0.2.5", [("Route", "<sip:proxy.example;lr>"), *base])
        )
        self.assertEqual([a for _, a in self.take()], [("192.0.2.5", 5099), ("192.0.2.44", 5060)])
        self.assertEqual(resolved, ["proxy.example"])


class RetransmissionTests(DatagramTestCase):
    callee_action = "reject"

    def test_final_response_retransmitted_until_ack(self) -> None:
        """RFC 3261 §17.2.1 (Timer G over UDP): the 486 is resent until the ACK, which
        Confirms the transaction; it ends after Timer I = T4."""
        self.proto.datagramReceived(udp_invite(), SOURCE)
        codes = [m.status_code for m, _ in self.take()]
        self.assertEqual(codes[0], 100)
        final = codes[-1]
        self.assertGreaterEqual(final, 400)
        self.clock.advance(T1)
        self.clock.advance(2 * T1)
        resent = self.take()
        self.assertEqual([m.status_code for m, _ in resent], [final, final])
        self.assertTrue(all(a == SOURCE for _, a in resent))
        to = resent[0][0].headers["To"]
        ack = udp_invite(method="ACK", body=b"").replace(
            b"To: <sip:bob@example.com>", b"To: " + to.encode()
        )
        self.proto.datagramReceived(ack, SOURCE)
        self.clock.advance(T2)
        self.assertEqual(self.take(), [])
        self.clock.advance(T4)
        self.assertEqual(self.proto.transaction_count, 0)

    def test_retransmitted_invite_gets_last_response(self) -> None:
        """RFC 3261 §17.2.1: an INVITE retransmission gets the last response again."""
        self.proto.datagramReceived(udp_invite(), SOURCE)
        first = [m.status_code for m, _ in self.take()]
        self.proto.datagramReceived(udp_invite(), SOURCE)
        again = [m.status_code for m, _ in self.take()]
        self.assertEqual(again, first[-1:])


class AnsweredCallTests(DatagramTestCase):
    callee_action = "answer"

    def test_2xx_retransmissions_go_to_via(self) -> None:
        """RFC 3261 §13.3.1.4 / §18.2.2: the dialog's 2xx retransmissions, handed out without
        a destination, go to the top Via's received/rport."""
        self.proto.datagramReceived(udp_invite(), ("192.0.2.9", 41000))
        ok = [(m, a) for m, a in self.take() if m.status_code == 200]
        self.assertEqual([a for _, a in ok], [("192.0.2.9", 41000)])
        self.clock.advance(T1)
        again = [(m, a) for m, a in self.take() if m.status_code == 200]
        self.assertEqual([a for _, a in again], [("192.0.2.9", 41000)])


class KeepaliveTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.proto = SIPDatagramProtocol(
            aor="sip:bob@127.0.0.1", reactor=self.clock, peer=("127.0.0.1", 5070)
        )
        self.keepalive = DatagramKeepalive(self.clock, interval=30, jitter=lambda: 1.0)
        self.failed: list[bool] = []
        self.proto.flow_failed = lambda: self.failed.append(True)  # type: ignore[method-assign]
        self.proto.keepalive = self.keepalive
        self.transport = FakeDatagramTransport()
        self.proto.makeConnection(self.transport)

    def stun_requests(self) -> list[StunMessage]:
        out = [StunMessage.parse(d) for d, _ in self.transport.written]
        self.transport.written.clear()
        return out

    def test_stun_request_every_interval(self) -> None:
        """RFC 5626 §4.4.2: a STUN Binding request to the registrar every interval."""
        self.clock.advance(30)
        [request] = self.stun_requests()
        mapped = address_attribute(ATTR_XOR_MAPPED_ADDRESS, SOURCE, request.transaction_id)
        answer = StunMessage(BINDING_SUCCESS, request.transaction_id, [mapped]).serialize()
        self.proto.datagramReceived(answer, ("127.0.0.1", 5070))
        self.assertTrue(self.keepalive.answered)
        self.clock.advance(30)
        self.assertEqual(len(self.stun_requests()), 1)

    def test_flow_timer_wins(self) -> None:
        """RFC 5626 §4.4.2: the registrar's Flow-Timer becomes the interval."""
        self.keepalive.set_interval(10)
        self.clock.advance(10)
        self.assertEqual(len(self.stun_requests()), 1)

    def test_silence_without_outbound_is_not_failure(self) -> None:
        """RFC 5626 §4.2.1: without Require: outbound a missing answer is no flow failure."""
        self.clock.advance(30)
        self.clock.advance(10)
        self.assertEqual(self.failed, [])
        self.clock.advance(30)
        self.assertGreaterEqual(len(self.stun_requests()), 2)

    def test_mode_logged_once(self) -> None:
        """Issue 10 item 2: which keep-alive mode a flow uses is logged once, not per
        refresh (again only if the registrar's answer changes it)."""
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        ok = Response(200, None, [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKr"), ("From", "<sip:a@b>;tag=1"),
            ("To", "<sip:a@b>;tag=2"), ("Call-ID", "r"), ("CSeq", "1 REGISTER"),
        ])
        self.keepalive.registered(ok)
        self.keepalive.registered(ok)
        modes = [e for e in events if "keep-alive: STUN" in e.get("log_format", "")]
        self.assertEqual(len(modes), 1)

    def test_silence_with_outbound_fails_the_flow(self) -> None:
        """RFC 5626 §4.4.2: with outbound signalled, no STUN answer means the flow failed."""
        ok = Response(200, None, [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKr"), ("From", "<sip:a@b>;tag=1"),
            ("To", "<sip:a@b>;tag=2"), ("Call-ID", "r"), ("CSeq", "1 REGISTER"),
            ("Require", "outbound"),
        ])
        self.proto.datagramReceived(bytes(ok), ("127.0.0.1", 5070))
        self.assertTrue(self.keepalive.outbound)
        self.clock.advance(30)
        self.clock.advance(10)
        self.assertEqual(self.failed, [True])


class ReferenceHookTests(DatagramTestCase):
    """The reference's hooks on the UDP flow too (issue 13)."""

    def test_when_disconnected_fires_when_the_socket_closes(self) -> None:
        first, second = self.proto.when_disconnected(), self.proto.when_disconnected()
        self.assertNoResult(first)
        self.proto.doStop()  # what the port does when it stops listening
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertIsNone(self.successResultOf(self.proto.when_disconnected()))

    def test_on_registered_is_a_hook_doing_nothing(self) -> None:
        self.assertIsNone(self.proto.on_registered())
