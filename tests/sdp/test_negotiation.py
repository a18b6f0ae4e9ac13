"""Tests for voiptwisted.sdp.negotiation: RFC 3264 offer/answer with the SRTP policy matrix."""

from __future__ import annotations

import base64

from twisted.trial import unittest

from tests.sdp.test_types import SDESTests, key_leaked, malformed_crypto_lines
from voiptwisted.sdp import CryptoAttribute, SessionDescription
from voiptwisted.sdp.negotiation import (
    AudioFormat,
    NegotiationFailed,
    answer_for,
    create_offer,
    parse_answer,
)

KEY = base64.b64encode(bytes(range(30))).decode()


def offer_sdp(
    formats: str = "0 8 101",
    proto: str = "RTP/AVP",
    extra: str = "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
    host: str = "IN IP4 192.0.2.10",
    port: int = 5004,
    before: str = "",
) -> SessionDescription:
    text = (
        f"v=0\r\no=- 1 1 {host}\r\ns=-\r\nc={host}\r\nt=0 0\r\n{before}"
        f"m=audio {port} {proto} {formats}\r\n{extra}"
    )
    return SessionDescription.parse(text.encode())


def answer(offer: SessionDescription, **kwargs: object):
    kwargs.setdefault("local_host", "127.0.0.1")
    kwargs.setdefault("port", 12000)
    return answer_for(offer, **kwargs)  # type: ignore[arg-type]


class AnswerTests(unittest.SynchronousTestCase):
    def test_offerer_preference_wins(self) -> None:
        """RFC 3264 §6.1 (issue 12): the answer uses the offer's first codec that we support,
        whatever our own order; our order only decides what we offer."""
        sd, neg = answer(offer_sdp("0 8 101"))
        self.assertEqual((neg.codec_name, neg.payload_type), ("PCMU", 0))
        self.assertEqual([f.payload_type for f in sd.media[0].fmt], [0, 101])
        sd, neg = answer(offer_sdp("8 0 101"), codecs=("PCMU", "PCMA"))
        self.assertEqual((neg.codec_name, neg.payload_type), ("PCMA", 8))
        _, neg = answer(offer_sdp("18 0 8 101"), codecs=("PCMA",))
        self.assertEqual((neg.codec_name, neg.payload_type), ("PCMA", 8))

    def test_telephone_event_kept_with_offer_pt(self) -> None:
        """RFC 4733 §7.1.1 / RFC 3264 §6.1: telephone-event is answered with the offer's PT."""
        offer = offer_sdp("8 96", extra="a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n")
        sd, neg = answer(offer)
        self.assertEqual(neg.telephone_event_pt, 96)
        self.assertIn(b"a=rtpmap:96 telephone-event/8000", bytes(sd))
        self.assertIn(b"a=fmtp:96 0-15", bytes(sd))
        _, neg = answer(offer_sdp("8", extra=""))
        self.assertIsNone(neg.telephone_event_pt)

    def test_dynamic_codec_by_rtpmap(self) -> None:
        """RFC 3264 §6.1: codecs are matched by rtpmap name/rate, keeping the offer's PT."""
        extra = "a=rtpmap:97 pcma/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        offer = offer_sdp("97 101", extra=extra)
        _, neg = answer(offer)
        self.assertEqual((neg.codec_name, neg.payload_type), ("PCMA", 97))

    def test_no_common_codec_488(self) -> None:
        """RFC 3264 §6: nothing acceptable -> 488 Not Acceptable Here."""
        with self.assertRaises(NegotiationFailed) as ctx:
            answer(offer_sdp("18 101"))
        self.assertEqual(ctx.exception.status_code, 488)
        self.assertIn("codec", ctx.exception.reason)

    def test_directions(self) -> None:
        """RFC 3264 §6.1: sendonly->recvonly, recvonly->sendonly, inactive->inactive."""
        for offered, expected in (
            ("sendrecv", "sendrecv"),
            ("sendonly", "recvonly"),
            ("recvonly", "sendonly"),
            ("inactive", "inactive"),
        ):
            sd, neg = answer(offer_sdp("8", extra=f"a={offered}\r\n"))
            self.assertEqual(neg.direction, expected)
            self.assertEqual(sd.media_direction(sd.media[0]), expected)
        _, neg = answer(offer_sdp("8", extra="", before="a=sendonly\r\n"))
        self.assertEqual(neg.direction, "recvonly")

    def test_ptime(self) -> None:
        """RFC 4566 §6 a=ptime: multiples of 20 ms honoured, anything else answered as 20."""
        for offered, used in (("40", 40), ("20", 20), ("30", 20), ("1000", 20)):
            sd, neg = answer(offer_sdp("8", extra=f"a=ptime:{offered}\r\n"))
            self.assertEqual(neg.ptime, used)
            self.assertEqual(sd.media[0].ptime, used)

    def test_other_streams_rejected_with_port_zero(self) -> None:
        """RFC 3264 §6: one m= per offered m=, declined streams with port 0, same order."""
        offer = SessionDescription.parse(
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
            b"m=video 6000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
            b"m=audio 5004 RTP/AVP 8\r\n"
            b"m=audio 5006 RTP/AVP 0\r\n"
            b"m=application 7000 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        )
        sd, neg = answer(offer)
        self.assertEqual([m.port for m in sd.media], [0, 12000, 0, 0])
        self.assertEqual([m.media for m in sd.media], ["video", "audio", "audio", "application"])
        self.assertEqual(neg.remote_port, 5004)
        reparsed = SessionDescription.parse(bytes(sd))
        self.assertEqual(len(reparsed.media), 4)

    def test_zero_port_offer_stream_skipped(self) -> None:
        """RFC 3264 §8.2: a stream offered with port 0 is not used."""
        with self.assertRaises(NegotiationFailed):
            answer(offer_sdp("8", port=0))

    def test_remote_address_and_rtcp(self) -> None:
        """RFC 3605 a=rtcp and RFC 5761 rtcp-mux decide where RTCP goes."""
        _, neg = answer(offer_sdp("8", extra=""))
        self.assertEqual(neg.remote, ("192.0.2.10", 5004))
        self.assertEqual((neg.rtcp_mux, neg.rtcp_port), (False, 5005))
        _, neg = answer(offer_sdp("8", extra="a=rtcp:6000\r\n"))
        self.assertEqual(neg.rtcp_port, 6000)
        sd, neg = answer(offer_sdp("8", extra="a=rtcp-mux\r\n"))
        self.assertEqual((neg.rtcp_mux, neg.rtcp_port), (True, 5004))
        self.assertTrue(sd.media[0].rtcp_mux)

    def test_hold_address(self) -> None:
        """RFC 3264 §8.4: c=0.0.0.0 means no destination until the peer's packets arrive."""
        _, neg = answer(offer_sdp("8", extra="", host="IN IP4 0.0.0.0"))
        self.assertIsNone(neg.remote)

    def test_ipv6(self) -> None:
        """RFC 4566 §5.7: IPv6 offers are answered with an IP6 c= line."""
        sd, neg = answer(offer_sdp("8", extra="", host="IN IP6 2001:db8::1"), local_host="::1")
        self.assertEqual(neg.remote, ("2001:db8::1", 5004))
        self.assertIn(b"c=IN IP6 ::1", bytes(sd))

    def test_never_unspecified_address(self) -> None:
        """Issue 4: the c= address is one the peer can reach, never 0.0.0.0."""
        for host in ("0.0.0.0", "::"):
            with self.assertRaises(ValueError):
                answer(offer_sdp("8"), local_host=host)
            with self.assertRaises(ValueError):
                create_offer(local_host=host, port=10000)

    def test_unknown_codec_name(self) -> None:
        with self.assertRaises(ValueError):
            answer(offer_sdp("8"), codecs=("OPUS-NOT-REGISTERED",))


class SRTPPolicyTests(unittest.SynchronousTestCase):
    """Issue 5 item 3: the required/optional/off matrix for inbound offers."""

    savp = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY + "\r\n"

    def test_required_rejects_avp(self) -> None:
        """Policy required: an RTP/AVP offer gets 488."""
        with self.assertRaises(NegotiationFailed) as ctx:
            answer(offer_sdp("8"), srtp_policy="required")
        self.assertEqual(ctx.exception.status_code, 488)

    def test_required_accepts_savp(self) -> None:
        """RFC 4568 §7.1.2: the answer carries one a=crypto with the offer's tag and suite."""
        sd, neg = answer(offer_sdp("8", "RTP/SAVP", self.savp), srtp_policy="required")
        self.assertEqual(sd.media[0].proto, "RTP/SAVP")
        lines = sd.media[0].get_attributes("crypto")
        self.assertEqual(len(lines), 1)
        ours = CryptoAttribute.parse(lines[0].value)
        self.assertEqual((ours.tag, ours.suite), (1, "AES_CM_128_HMAC_SHA1_80"))
        self.assertNotEqual(ours.master, bytes(range(30)))
        self.assertEqual(neg.srtp.remote.master, bytes(range(30)))
        self.assertEqual(neg.srtp.local, ours)

    def test_optional_accepts_both(self) -> None:
        _, neg = answer(offer_sdp("8"), srtp_policy="optional")
        self.assertIsNone(neg.srtp)
        _, neg = answer(offer_sdp("8", "RTP/SAVP", self.savp), srtp_policy="optional")
        self.assertIsNotNone(neg.srtp)

    def test_off_rejects_savp(self) -> None:
        """Policy off: an RTP/SAVP-only offer gets 488 (never answered in clear)."""
        with self.assertRaises(NegotiationFailed):
            answer(offer_sdp("8", "RTP/SAVP", self.savp), srtp_policy="off")

    def test_off_takes_avp_alternative(self) -> None:
        """Policy off: with an SAVP and an AVP audio stream, SAVP is declined (port 0)."""
        offer = SessionDescription.parse(
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
                f"m=audio 5004 RTP/SAVP 8\r\n{self.savp}m=audio 5006 RTP/AVP 8\r\n"
            ).encode()
        )
        sd, neg = answer(offer, srtp_policy="off")
        self.assertEqual([m.port for m in sd.media], [0, 12000])
        self.assertIsNone(neg.srtp)
        self.assertNotIn(b"inline:", bytes(sd))

    def test_avp_with_crypto_ignored(self) -> None:
        """a=crypto on RTP/AVP is outside RFC 4568: answered as plain RTP/AVP."""
        sd, neg = answer(offer_sdp("8", "RTP/AVP", self.savp))
        self.assertIsNone(neg.srtp)
        self.assertNotIn(b"crypto", bytes(sd))

    def test_unsupported_crypto_skipped(self) -> None:
        """RFC 4568 §7.1.2: unsupported lines (MKI, unknown suite) are skipped for a later one."""
        extra = (
            f"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}\r\n"
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4\r\n"
            f"a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{KEY}\r\n"
        )
        _, neg = answer(offer_sdp("8", "RTP/SAVP", extra))
        self.assertEqual((neg.srtp.local.tag, neg.srtp.local.suite),
                         (3, "AES_CM_128_HMAC_SHA1_32"))
        with self.assertRaises(NegotiationFailed):
            answer(offer_sdp("8", "RTP/SAVP", extra.split("\r\n", 2)[0] + "\r\n"))

    def test_gcm_when_offered(self) -> None:
        """RFC 7714: AEAD_AES_128_GCM is accepted when the peer offers it."""
        key = base64.b64encode(bytes(28)).decode()
        extra = f"a=crypto:5 AEAD_AES_128_GCM inline:{key}\r\n"
        _, neg = answer(offer_sdp("8", "RTP/SAVP", extra))
        self.assertEqual(neg.srtp.local.suite, "AEAD_AES_128_GCM")
        self.assertEqual(len(neg.srtp.local.master), 28)

    def test_savpf_and_dtls_declined(self) -> None:
        for proto in ("RTP/SAVPF", "UDP/TLS/RTP/SAVP"):
            with self.assertRaises(NegotiationFailed):
                answer(offer_sdp("8", proto, self.savp))


class OfferTests(unittest.SynchronousTestCase):
    def test_offer_contents(self) -> None:
        """Issue 4: our codecs + telephone-event/8000 (101), ptime 20, sendrecv, rtcp-mux."""
        sd, crypto = create_offer(local_host="127.0.0.1", port=10002)
        media = sd.media[0]
        self.assertEqual((media.media, media.port, media.proto), ("audio", 10002, "RTP/AVP"))
        self.assertEqual([f.payload_type for f in media.fmt], [8, 0, 101])
        self.assertEqual(media.get_format(101).encoding_name, "telephone-event")
        self.assertEqual(media.ptime, 20)
        self.assertEqual(media.direction, "sendrecv")
        self.assertTrue(media.rtcp_mux)
        self.assertEqual(crypto, {})
        self.assertIn(b"c=IN IP4 127.0.0.1", bytes(sd))

    def test_secure_offer(self) -> None:
        """RFC 4568 §7.1.1: RTP/SAVP with a fresh key per offered suite."""
        sd, crypto = create_offer(local_host="127.0.0.1", port=10002, secure=True)
        media = sd.media[0]
        self.assertEqual(media.proto, "RTP/SAVP")
        parsed = [CryptoAttribute.parse(a.value) for a in media.get_attributes("crypto")]
        self.assertEqual([c.tag for c in parsed], [1, 2])
        self.assertEqual(len({c.master for c in parsed}), 2)
        offered = {t: c.master for t, c in crypto.items()}
        self.assertEqual(offered, {c.tag: c.master for c in parsed})

    def test_offer_answer_round_trip(self) -> None:
        """RFC 3264 §7: our offer answered by our answerer gives matching views on both sides."""
        offer, crypto = create_offer(local_host="127.0.0.1", port=10002, secure=True)
        wire = SessionDescription.parse(bytes(offer))
        ans, theirs = answer(wire, local_host="127.0.0.2", port=20000)
        wire_answer = SessionDescription.parse(bytes(ans))
        ours = parse_answer(wire_answer, offer=offer, offered_crypto=crypto)
        self.assertEqual(ours.remote, ("127.0.0.2", 20000))
        self.assertEqual(theirs.remote, ("127.0.0.1", 10002))
        self.assertEqual(ours.srtp.local.master, theirs.srtp.remote.master)
        self.assertEqual(ours.srtp.remote.master, theirs.srtp.local.master)
        self.assertEqual(ours.telephone_event_pt, 101)
        self.assertTrue(ours.rtcp_mux)

    def test_answer_direction(self) -> None:
        """RFC 3264 §7: an answer saying recvonly means we only send."""
        offer, _ = create_offer(local_host="127.0.0.1", port=10002)
        text = bytes(offer).replace(b"a=sendrecv", b"a=recvonly").replace(b"10002", b"4000")
        neg = parse_answer(SessionDescription.parse(text), offer=offer)
        self.assertEqual(neg.direction, "sendonly")

    def test_answer_to_offer_with_audio_second(self) -> None:
        """RFC 3264 §8: re-offering our answer to a video+audio offer (video declined, port 0)
        keeps the m= lines in place; the answer's audio is read from the same position."""
        first = offer_sdp(before="m=video 5006 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n")
        ours, _ = answer(first)
        self.assertEqual([m.port for m in ours.media], [0, 12000])
        theirs, _ = answer(SessionDescription.parse(bytes(ours)), port=30000)
        neg = parse_answer(SessionDescription.parse(bytes(theirs)), offer=ours)
        self.assertEqual(neg.remote, ("127.0.0.1", 30000))
        self.assertEqual(neg.codec_name, "PCMU")  # the first offer's first codec (§6.1)

    def test_bad_answers(self) -> None:
        """RFC 3264 §7 / RFC 4568 §7.1.3: declined stream, wrong codec, missing key -> failure."""
        offer, crypto = create_offer(local_host="127.0.0.1", port=10002, secure=True)
        base = bytes(offer)
        cases = [
            base.replace(b"m=audio 10002", b"m=audio 0"),
            base.replace(b"RTP/SAVP 8 0 101", b"RTP/SAVP 18"),
            b"\r\n".join(line for line in base.split(b"\r\n") if b"crypto" not in line),
            base.replace(b"RTP/SAVP", b"RTP/AVP"),
            base,  # two a=crypto lines: an answer must pick one
            base.replace(b"a=crypto:1", b"a=crypto:9").split(b"a=crypto:2")[0],
        ]
        for text in cases:
            with self.assertRaises(NegotiationFailed, msg=text):
                parse_answer(SessionDescription.parse(text), offer=offer, offered_crypto=crypto)

    def test_failure_reason_hides_key(self) -> None:
        """Issue 14 finding 12: a malformed a=crypto in an answer fails it with a reason (the
        488's log line and Warning text) that quotes no key characters."""
        offer, crypto = create_offer(local_host="127.0.0.1", port=10002, secure=True)
        [answer_line] = [line for line in bytes(offer).split(b"\r\n") if b"a=crypto:1" in line]
        base = bytes(offer).split(b"a=crypto:2")[0].replace(answer_line + b"\r\n", b"")
        for value in malformed_crypto_lines(SDESTests.key):
            text = base + f"a=crypto:{value}\r\n".encode()
            with self.assertRaises(NegotiationFailed, msg=value) as ctx:
                parse_answer(SessionDescription.parse(text), offer=offer, offered_crypto=crypto)
            reason = f"{ctx.exception} {ctx.exception.reason}"
            self.assertIsNone(key_leaked(SDESTests.key, reason), value)


class StaticCodecNameTests(unittest.SynchronousTestCase):
    def test_codec_names_resolve_to_their_one_static_payload_type(self) -> None:
        """RFC 3551 §6 Table 4: a codec given by name is its static payload type, in any
        case; a name with several (DVI4, L16) or none needs a description (ValueError)."""
        self.assertEqual(AudioFormat.static("pcmu"), AudioFormat("PCMU", 8000, 1, 0))
        self.assertEqual(AudioFormat.static("G722"), AudioFormat("G722", 8000, 1, 9))
        for name in ("DVI4", "L16", "telephone-event", "opus", ""):
            with self.subTest(name=name), self.assertRaises(ValueError):
                AudioFormat.static(name)
