"""Numbers from the network longer than int()'s limit are parse errors (issue 14 finding 12).

Python refuses to convert more than 4,300 digits with a plain ValueError; every number
read from SIP or SDP text is bounded in digits first, so a huge one is a SIPParseError
(a 400 to a request) or an SDPParseError, never a ValueError that becomes a 500 and a
traceback.  Sites that were already bounded are pinned here too.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.hostile import SDP, invite
from tests.sip.test_dialog import (
    callee_class,
    connect,
    invite_bytes,
    make_media_class,
    make_protocol,
    written,
)
from voiptwisted.sdp.description import SessionDescription
from voiptwisted.sdp.types import SDPParseError
from voiptwisted.sip.framing import FramingError, StreamFramer
from voiptwisted.sip.headers import NameAddr, SIPParseError, Via, via_branch
from voiptwisted.sip.message import Message, Response
from voiptwisted.sip.registration import _retry_after
from voiptwisted.sip.uri import InvalidURI, SipURI

HUGE = "9" * 5000


class SIPNumberTests(SynchronousTestCase):
    def test_expires_header(self) -> None:
        """RFC 3261 §20.19: Expires; up to 20 digits are clamped to 2**32-1 (§10.2.1.1)."""
        self.assertEqual(Message.parse(invite(extra="Expires: " + "9" * 20)).expires, 2**32 - 1)
        message = Message.parse(invite(extra="Expires: " + HUGE))
        self.assertRaises(SIPParseError, lambda: message.expires)
        self.assertRaises(SIPParseError, message.validate)

    def test_expires_parameter(self) -> None:
        """RFC 3261 §20.10: the Contact expires parameter."""
        contact = NameAddr.parse(f"<sip:a@b>;expires={HUGE}")
        self.assertRaises(SIPParseError, lambda: contact.expires)

    def test_via_rport(self) -> None:
        """RFC 3581 §4: rport is a port; the strict check and the object agree."""
        value = f"SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKx;rport={HUGE}"
        self.assertRaises(SIPParseError, Via.parse, value)
        self.assertRaises(SIPParseError, via_branch, value)
        message = Message.parse(invite({"Via: SIP/2.0/TLS 192.0.2.10:50112;branch=z9hG4bK776as"
                                        "dhds;rport": f"Via: {value}"}))  # fmt: skip
        self.assertRaises(SIPParseError, lambda: message.top_via)

    def test_uri_ttl(self) -> None:
        """RFC 3261 §19.1.1: ttl is 0-255; a huge one is InvalidURI like any bad URI."""
        self.assertRaises(InvalidURI, SipURI.parse, f"sip:alice@example.com;ttl={HUGE}")

    def test_bounded_sites(self) -> None:
        """CSeq (§8.1.1.5), Content-Length (§20.14), Max-Forwards (§20.22), the status code
        (§7.2) and the stream framer's Content-Length (§18.3)."""
        for old, new in (
            ("CSeq: 314159 INVITE", f"CSeq: {HUGE} INVITE"),
            ("Max-Forwards: 70", f"Max-Forwards: {HUGE}"),
        ):
            with self.subTest(header=old):
                self.assertRaises(SIPParseError, Message.parse, invite({old: new}))
        data = invite(body=b"").replace(b"Content-Length: 0", f"Content-Length: {HUGE}".encode())
        self.assertRaises(SIPParseError, Message.parse, data)
        response = bytes(Response(200, headers=Message.parse(invite()).headers.items()))
        status = response.replace(b" 200 ", f" {HUGE} ".encode())
        self.assertRaises(SIPParseError, Message.parse, status)
        self.assertRaises(FramingError, StreamFramer().feed, data)

    def test_retry_after_and_registrar_numbers(self) -> None:
        """RFC 3261 §20.33: a Retry-After that is not ASCII digits is ignored, not a
        ValueError ('²' passes str.isdigit() but not int())."""
        for value in ("²", HUGE, "\u0663"):
            with self.subTest(value=value[:5]):
                response = Response(503, headers=[("Retry-After", value)])
                self.assertIsNone(_retry_after(response))
        self.assertEqual(_retry_after(Response(503, headers=[("Retry-After", "30")])), 30)


class ProtocolNumberTests(SynchronousTestCase):
    def test_huge_expires_gets_400(self) -> None:
        """RFC 3261 §21.4.1: an INVITE whose Expires does not parse gets 400 (it was a 500
        and a logged traceback)."""
        clock = task.Clock()
        proto = make_protocol("sip:bob@example.com", clock, make_media_class(),
                              dialog_class=callee_class("ring"))  # fmt: skip
        transport = connect(proto)
        proto.dataReceived(invite_bytes(extra=f"Expires: {HUGE}\r\n"))
        self.assertEqual([m.status_code for m in written(transport)], [100, 400])
        self.assertEqual(self.flushLoggedErrors(), [])


class SDPNumberTests(SynchronousTestCase):
    def test_numbers(self) -> None:
        """RFC 4566 §5: every number field is 1*DIGIT, bounded before conversion."""
        for old, new in (
            (b"o=- 4711 ", b"o=- " + HUGE.encode() + b" "),
            (b"t=0 0", b"t=0 " + HUGE.encode()),
            (b"m=audio 50000 ", b"m=audio " + HUGE.encode() + b" "),
            (b"RTP/SAVP 0 8 101", b"RTP/SAVP 0 8 " + HUGE.encode()),
            (b"s=call\r\n", b"s=call\r\nb=AS:" + HUGE.encode() + b"\r\n"),
        ):
            with self.subTest(field=old):
                self.assertIn(old, SDP)
                self.assertRaises(SDPParseError, SessionDescription.parse, SDP.replace(old, new))

    def test_attribute_numbers(self) -> None:
        """RFC 4566 §6 a=ptime and RFC 3605 a=rtcp: a huge value reads as absent."""
        media = SessionDescription.parse(
            SDP + b"a=ptime:" + HUGE.encode() + b"\r\na=rtcp:" + HUGE.encode() + b"\r\n"
        ).media[0]
        self.assertEqual((media.ptime, media.rtcp_port), (None, None))
        rtpmap = SDP.replace(b"PCMU/8000", b"PCMU/" + HUGE.encode())
        self.assertNotEqual(rtpmap, SDP)
        self.assertEqual(SessionDescription.parse(rtpmap).media[0].fmt[0].sample_rate, 8000)
