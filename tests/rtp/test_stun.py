"""Tests for voiptwisted.rtp.stun: RFC 5389 Binding messages and the client on task.Clock."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.rtp.stun import (
    ATTR_ERROR_CODE,
    ATTR_MAPPED_ADDRESS,
    ATTR_XOR_MAPPED_ADDRESS,
    BINDING_ERROR,
    BINDING_REQUEST,
    BINDING_SUCCESS,
    MAGIC_COOKIE,
    MappedAddress,
    StunClient,
    StunError,
    StunMessage,
    StunParseError,
    StunProtocol,
    StunTimeout,
    address_attribute,
    binding_request,
    is_stun,
)

TXID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
# RFC 5769 §2.2 and §2.3 sample responses (SOFTWARE, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY,
# FINGERPRINT).
RFC5769_IPV4 = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b74657374207665637"
    "46f722000200008"
    "0001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96"
)
RFC5769_IPV6 = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed4180280004c8fb0b4c"
)


class MessageTests(SynchronousTestCase):
    def test_rfc5769_ipv4_response(self) -> None:
        """RFC 5389 §15.2 XOR-MAPPED-ADDRESS (IPv4) and §15.5 FINGERPRINT, RFC 5769 §2.2."""
        message = StunMessage.parse(RFC5769_IPV4)
        self.assertEqual(message.message_type, BINDING_SUCCESS)
        self.assertEqual(message.transaction_id, TXID)
        self.assertEqual(
            message.mapped_address, MappedAddress(ipaddress.ip_address("192.0.2.1"), 32853)
        )

    def test_rfc5769_ipv6_response(self) -> None:
        """RFC 5389 §15.2: IPv6 address XORed with cookie and transaction id, RFC 5769 §2.3."""
        message = StunMessage.parse(RFC5769_IPV6)
        self.assertEqual(
            message.mapped_address,
            MappedAddress(ipaddress.ip_address("2001:db8:1234:5678:11:2233:4455:6677"), 32853),
        )

    def test_fingerprint_mismatch_rejected(self) -> None:
        """RFC 5389 §15.5: a message whose FINGERPRINT does not match is discarded."""
        corrupted = bytearray(RFC5769_IPV4)
        corrupted[45] ^= 1
        with self.assertRaises(StunParseError):
            StunMessage.parse(bytes(corrupted))

    def test_binding_request_layout(self) -> None:
        """RFC 5389 §6/§7.1: type 0x0001, magic cookie, 96-bit id, FINGERPRINT last."""
        wire = binding_request(TXID, software="voiptwisted")
        mtype, length, cookie, txid = struct.unpack_from("!HHI12s", wire)
        self.assertEqual((mtype, cookie, txid), (BINDING_REQUEST, MAGIC_COOKIE, TXID))
        self.assertEqual(length, len(wire) - 20)
        self.assertEqual(length % 4, 0)
        self.assertEqual(wire[-8:-4], bytes.fromhex("80280004"))
        message = StunMessage.parse(wire)  # verifies the fingerprint
        self.assertEqual(message.get(0x8022), b"voiptwisted")
        self.assertTrue(is_stun(wire))

    def test_random_transaction_ids(self) -> None:
        """RFC 5389 §6: the transaction id is chosen at random for each request."""
        ids = {StunMessage.parse(binding_request()).transaction_id for _ in range(50)}
        self.assertEqual(len(ids), 50)

    def test_mapped_address_fallback(self) -> None:
        """RFC 5389 §15.1: MAPPED-ADDRESS is used when XOR-MAPPED-ADDRESS is absent."""
        for host in ("203.0.113.7", "2001:db8::7"):
            attr = address_attribute(ATTR_MAPPED_ADDRESS, (host, 40000), TXID)
            message = StunMessage.parse(StunMessage(BINDING_SUCCESS, TXID, [attr]).serialize())
            self.assertEqual(message.mapped_address, (ipaddress.ip_address(host), 40000))

    def test_xor_preferred_over_mapped(self) -> None:
        attrs = [
            address_attribute(ATTR_MAPPED_ADDRESS, ("10.0.0.1", 1), TXID),
            address_attribute(ATTR_XOR_MAPPED_ADDRESS, ("198.51.100.2", 5060), TXID),
        ]
        message = StunMessage(BINDING_SUCCESS, TXID, attrs)
        self.assertEqual(message.mapped_address, (ipaddress.ip_address("198.51.100.2"), 5060))

    def test_header_validation(self) -> None:
        """RFC 5389 §7.3: leading zero bits, magic cookie and length are checked."""
        good = binding_request(TXID)
        bad_type = bytes([0x40]) + good[1:]
        bad_cookie = good[:4] + b"\x00\x00\x00\x00" + good[8:]
        for bad in (good[:19], bad_type, bad_cookie, good + b"\x00\x00\x00\x00", good[:-1]):
            with self.assertRaises(StunParseError):
                StunMessage.parse(bad)
        self.assertFalse(is_stun(bytes.fromhex("80001234") + bytes(16)))  # RTP

    def test_bad_address_attribute(self) -> None:
        message = StunMessage(BINDING_SUCCESS, TXID, [(ATTR_XOR_MAPPED_ADDRESS, b"\x00\x03")])
        with self.assertRaises(StunParseError):
            _ = message.mapped_address
        message = StunMessage(BINDING_SUCCESS, TXID, [(ATTR_XOR_MAPPED_ADDRESS, bytes(8) + b"x")])
        with self.assertRaises(StunParseError):
            _ = message.mapped_address

    def test_error_code(self) -> None:
        """RFC 5389 §15.6: ERROR-CODE class * 100 + number, then the reason phrase."""
        value = bytes([0, 0, 4, 20]) + b"Unknown Attribute"
        message = StunMessage(BINDING_ERROR, TXID, [(ATTR_ERROR_CODE, value)])
        self.assertEqual(message.error_code, (420, "Unknown Attribute"))

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=60))
    def test_fuzz_raises_only_parse_error(self, tail: bytes) -> None:
        data = struct.pack("!HHI", 0x0101, len(tail), MAGIC_COOKIE) + TXID + tail
        try:
            message = StunMessage.parse(data)
            _ = message.mapped_address, message.error_code
        except StunParseError:
            pass


SERVER = ("198.51.100.1", 3478)


def response_for(request: bytes, mapped: tuple[str, int] = ("203.0.113.9", 4000)) -> bytes:
    txid = StunMessage.parse(request).transaction_id
    attr = address_attribute(ATTR_XOR_MAPPED_ADDRESS, mapped, txid)
    return StunMessage(BINDING_SUCCESS, txid, [attr]).serialize(fingerprint=True)


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.client = StunClient(lambda data, addr: self.sent.append((data, addr)), self.clock)

    def test_success(self) -> None:
        d = self.client.request(SERVER)
        self.assertEqual(len(self.sent), 1)
        request, addr = self.sent[0]
        self.assertEqual(addr, SERVER)
        self.assertEqual(StunMessage.parse(request).message_type, BINDING_REQUEST)
        self.assertTrue(self.client.datagram_received(response_for(request), SERVER))
        result = self.successResultOf(d)
        self.assertEqual(result, (ipaddress.ip_address("203.0.113.9"), 4000))
        self.assertEqual(self.client.pending, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_retransmits_same_request(self) -> None:
        """RFC 5389 §7.2.1: retransmissions reuse the transaction id, RTO doubling."""
        d = self.client.request(SERVER)
        self.clock.advance(0.1)
        self.assertEqual(len(self.sent), 2)
        self.clock.advance(0.1)
        self.assertEqual(len(self.sent), 2)
        self.clock.advance(0.1)
        self.assertEqual(len(self.sent), 3)
        self.assertEqual({data for data, _ in self.sent}, {self.sent[0][0]})
        self.client.datagram_received(response_for(self.sent[0][0]), SERVER)
        self.successResultOf(d)

    def test_silent_server_times_out_within_500ms(self) -> None:
        """A silent server fails the request at 0.5 s with StunTimeout and leaves no timers."""
        d = self.client.request(SERVER)
        self.clock.advance(0.499)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        self.failureResultOf(d, StunTimeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.client.pending, 0)
        self.assertEqual(len(self.sent), 3)

    def test_transaction_id_must_match(self) -> None:
        """RFC 5389 §7.3.3: a response is matched to its request by transaction id."""
        d = self.client.request(SERVER)
        other = response_for(binding_request())
        self.assertTrue(self.client.datagram_received(other, SERVER))
        self.assertNoResult(d)
        self.client.datagram_received(response_for(self.sent[0][0]), SERVER)
        self.successResultOf(d)

    def test_response_from_other_address_ignored(self) -> None:
        d = self.client.request(SERVER)
        self.client.datagram_received(response_for(self.sent[0][0]), ("192.0.2.66", 3478))
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.failureResultOf(d, StunTimeout)

    def test_ipv4_mapped_source_accepted(self) -> None:
        """A dual-stack socket reports an IPv4 server as ::ffff:a.b.c.d; same transaction."""
        d = self.client.request(SERVER)
        self.client.datagram_received(response_for(self.sent[0][0]), ("::ffff:198.51.100.1", 3478))
        self.successResultOf(d)

    def test_ipv6_server(self) -> None:
        server = ("::1", 3478)
        d = self.client.request(server)
        request, addr = self.sent[0]
        self.assertEqual(addr, server)
        self.client.datagram_received(response_for(request, ("2001:db8::5", 6000)), ("::1", 3478))
        self.assertEqual(self.successResultOf(d), (ipaddress.ip_address("2001:db8::5"), 6000))

    def test_error_response(self) -> None:
        d = self.client.request(SERVER)
        txid = StunMessage.parse(self.sent[0][0]).transaction_id
        err = StunMessage(BINDING_ERROR, txid, [(ATTR_ERROR_CODE, bytes([0, 0, 5, 0]) + b"Oops")])
        self.client.datagram_received(err.serialize(), SERVER)
        failure = self.failureResultOf(d, StunError)
        self.assertEqual(failure.value.code, 500)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_success_without_address_fails(self) -> None:
        d = self.client.request(SERVER)
        txid = StunMessage.parse(self.sent[0][0]).transaction_id
        self.client.datagram_received(StunMessage(BINDING_SUCCESS, txid).serialize(), SERVER)
        self.failureResultOf(d, StunError)

    def test_garbage_and_rtp_not_consumed_or_fatal(self) -> None:
        d = self.client.request(SERVER)
        self.assertFalse(self.client.datagram_received(b"\x80\x00" + bytes(30), SERVER))
        broken = bytearray(response_for(self.sent[0][0]))
        broken[-1] ^= 0xFF
        self.assertTrue(self.client.datagram_received(bytes(broken), SERVER))
        self.assertNoResult(d)
        self.clock.advance(1)
        self.failureResultOf(d, StunTimeout)

    def test_cancel_stops_timers(self) -> None:
        d = self.client.request(SERVER)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.client.pending, 0)

    def test_hostname_rejected(self) -> None:
        self.failureResultOf(self.client.request(("stun.example.com", 3478)), StunError)
        self.assertEqual(self.sent, [])

    def test_pending_bounded(self) -> None:
        pending = [self.client.request(SERVER) for _ in range(16)]
        self.failureResultOf(self.client.request(SERVER), StunError)
        self.clock.advance(1)
        self.assertEqual(self.client.pending, 0)
        for d in pending:
            self.failureResultOf(d, StunTimeout)


class FakeUDPTransport:
    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))


class ProtocolTests(SynchronousTestCase):
    def test_datagram_protocol(self) -> None:
        clock = Clock()
        proto = StunProtocol(clock)
        transport = FakeUDPTransport()
        proto.makeConnection(transport)
        d = proto.request(SERVER)
        request, _ = transport.written[0]
        proto.datagramReceived(response_for(request), SERVER)
        self.assertEqual(self.successResultOf(d).port, 4000)

    def test_stop_cancels_pending(self) -> None:
        clock = Clock()
        proto = StunProtocol(clock)
        proto.makeConnection(FakeUDPTransport())
        d = proto.request(SERVER)
        proto.doStop()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_not_listening(self) -> None:
        clock = Clock()
        proto = StunProtocol(clock)
        d = proto.request(SERVER)
        clock.advance(0.5)
        self.failureResultOf(d, StunTimeout)
        self.flushLoggedErrors()
