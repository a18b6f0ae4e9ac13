"""Tests for voiptwisted.sdp.types: the SDP field values, payload formats and crypto view."""

from twisted.trial import unittest

from voiptwisted.sdp.types import (
    SUITES,
    Attribute,
    Bandwidth,
    ConnectionData,
    CryptoAttribute,
    Field,
    IntField,
    MediaDescription,
    Origin,
    PayloadTypeSpec,
    RTPPayloadFormat,
    SDESError,
    SDPParseError,
    StaticPayloadType,
    StrField,
    Timing,
)

KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"


class AttributeTests(unittest.SynchronousTestCase):
    def test_property_and_value(self) -> None:
        """RFC 4566 §5.13: ``a=<attribute>`` and ``a=<attribute>:<value>``."""
        self.assertEqual(Attribute.parse("sendrecv"), Attribute("sendrecv"))
        self.assertEqual(Attribute.parse(b"ptime:20"), Attribute("ptime", "20"))
        self.assertEqual(Attribute.parse("fmtp:101 0-16:x"), Attribute("fmtp", "101 0-16:x"))
        self.assertEqual(bytes(Attribute("rtcp-mux")), b"rtcp-mux")
        self.assertEqual(bytes(Attribute("ptime", "20")), b"ptime:20")
        self.assertEqual(str(Attribute("ptime", "20")), "ptime:20")

    def test_empty_value_distinct_from_none(self) -> None:
        """``a=x:`` and ``a=x`` stay distinct so both round-trip."""
        self.assertEqual(Attribute.parse("ptime:"), Attribute("ptime", ""))
        self.assertEqual(bytes(Attribute.parse("ptime:")), b"ptime:")

    def test_empty_name(self) -> None:
        with self.assertRaises(SDPParseError):
            Attribute.parse(":value")

    def test_repr_redacts_secrets(self) -> None:
        """Keys (RFC 4568) and ICE passwords never appear in repr."""
        for name in ("crypto", "ice-pwd"):
            text = repr(Attribute(name, f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"))
            self.assertNotIn(KEY, text)
            self.assertIn("redacted", text)
        self.assertIn("'20'", repr(Attribute("ptime", "20")))


class BandwidthTests(unittest.SynchronousTestCase):
    def test_as_and_tias(self) -> None:
        """RFC 4566 §5.8 ``b=AS:`` and RFC 3890 ``b=TIAS:``."""
        self.assertEqual(Bandwidth.parse("AS:64"), Bandwidth("AS", 64))
        self.assertEqual(Bandwidth.parse("TIAS:1000000"), Bandwidth("TIAS", 1000000))
        self.assertEqual(bytes(Bandwidth("CT", 384)), b"CT:384")

    def test_invalid(self) -> None:
        for value in ("AS", "AS:", "AS:-1", "AS:x", ":64", "AS:\uff16\uff14", "AS: 64"):
            with self.assertRaises(SDPParseError, msg=value):
                Bandwidth.parse(value)


class ConnectionDataTests(unittest.SynchronousTestCase):
    def test_ipv4_ipv6_multicast(self) -> None:
        """RFC 4566 §5.7: ``c=<nettype> <addrtype> <connection-address>``, IP4 and IP6."""
        c = ConnectionData.parse("IN IP6 ::1")
        self.assertEqual((c.nettype, c.addrtype, c.connection_address), ("IN", "IP6", "::1"))
        self.assertEqual(bytes(c), b"IN IP6 ::1")
        multicast = ConnectionData.parse("IN IP4 224.2.1.1/127/3")
        self.assertEqual(multicast.address, "224.2.1.1")
        self.assertEqual(str(multicast), "IN IP4 224.2.1.1/127/3")

    def test_invalid(self) -> None:
        for value in ("", "IN IP4", "IN IP4 1.2.3.4 extra"):
            with self.assertRaises(SDPParseError, msg=value):
                ConnectionData.parse(value)


class OriginTests(unittest.SynchronousTestCase):
    def test_round_trip(self) -> None:
        """RFC 4566 §5.2 origin with six fields."""
        value = "jdoe 2890844526 2890842807 IN IP4 10.47.16.5"
        origin = Origin.parse(value)
        self.assertEqual(origin.username, "jdoe")
        self.assertEqual(origin.sess_id, "2890844526")
        self.assertEqual(origin.sess_version, "2890842807")
        self.assertEqual(origin.unicast_address, "10.47.16.5")
        self.assertEqual(str(origin), value)

    def test_invalid(self) -> None:
        for value in ("- 1 2 IN IP4", "- 1 2 IN IP4 h x", "- a 2 IN IP4 h", "- 1 -2 IN IP4 h"):
            with self.assertRaises(SDPParseError, msg=value):
                Origin.parse(value)


class TimingTests(unittest.SynchronousTestCase):
    def test_parse(self) -> None:
        """RFC 4566 §5.9 ``t=<start> <stop>`` with NTP times."""
        self.assertEqual(Timing.parse("2873397496 2873404696"), Timing(2873397496, 2873404696))
        self.assertEqual(bytes(Timing(0, 0)), b"0 0")

    def test_invalid(self) -> None:
        for value in ("0", "0 0 0", "a 0", "0 -1"):
            with self.assertRaises(SDPParseError, msg=value):
                Timing.parse(value)


class StaticPayloadTypeTests(unittest.SynchronousTestCase):
    def test_table(self) -> None:
        """RFC 3551 §6 Tables 4/5, with the reference's member names and values."""
        expected = {
            "PCMU": (0, 8000, "PCMU", 1, 160), "GSM": (3, 8000, "GSM", 1, 160),
            "G723": (4, 8000, "G723", 1, 160), "DVI4_8K": (5, 8000, "DVI4", 1, 160),
            "DVI4_16K": (6, 16000, "DVI4", 1, 320), "LPC": (7, 8000, "LPC", 1, 160),
            "PCMA": (8, 8000, "PCMA", 1, 160), "G722": (9, 8000, "G722", 1, 160),
            "L16_STEREO": (10, 44100, "L16", 2, 882), "L16_MONO": (11, 44100, "L16", 1, 882),
            "QCELP": (12, 8000, "QCELP", 1, 160), "CN": (13, 8000, "CN", 1, 160),
            "MPA": (14, 90000, "MPA", 1, 0), "G728": (15, 8000, "G728", 1, 160),
            "DVI4_11K": (16, 11025, "DVI4", 1, 220), "DVI4_22K": (17, 22050, "DVI4", 1, 441),
            "G729": (18, 8000, "G729", 1, 160), "CELB": (25, 90000, "CelB", 1, 0),
            "JPEG": (26, 90000, "JPEG", 1, 0), "NV": (28, 90000, "nv", 1, 0),
            "H261": (31, 90000, "H261", 1, 0), "MPV": (32, 90000, "MPV", 1, 0),
            "MP2T": (33, 90000, "MP2T", 1, 0), "H263": (34, 90000, "H263", 1, 0),
        }
        self.assertEqual({m.name: tuple(m.value) for m in StaticPayloadType}, expected)
        self.assertIsInstance(StaticPayloadType.PCMA.value, PayloadTypeSpec)
        self.assertEqual(StaticPayloadType.PCMA.value.frame_size, 160)

    def test_from_pt(self) -> None:
        self.assertIs(StaticPayloadType.from_pt(8), StaticPayloadType.PCMA)
        self.assertIs(StaticPayloadType.from_pt(0), StaticPayloadType.PCMU)
        for pt in (1, 2, 19, 96, 127, -1):
            with self.assertRaises(ValueError, msg=pt):
                StaticPayloadType.from_pt(pt)


class RTPPayloadFormatTests(unittest.SynchronousTestCase):
    def test_static_fallback(self) -> None:
        """RFC 3551 §6: static payload types need no a=rtpmap."""
        fmt = RTPPayloadFormat.from_pt(8)
        self.assertEqual((fmt.encoding_name, fmt.sample_rate, fmt.channels), ("PCMA", 8000, 1))
        self.assertEqual(bytes(fmt), b"8 PCMA/8000")
        dynamic = RTPPayloadFormat.from_pt(96)
        self.assertIsNone(dynamic.encoding_name)
        self.assertIsNone(dynamic.sample_rate)

    def test_parse_rtpmap(self) -> None:
        """RFC 4566 §6 ``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]``."""
        opus = RTPPayloadFormat.parse("111 opus/48000/2")
        self.assertEqual(opus, RTPPayloadFormat(111, None, "opus", 2, 48000))
        self.assertEqual(bytes(opus), b"111 opus/48000/2")
        event = RTPPayloadFormat.parse(b"101 telephone-event/8000")
        self.assertEqual((event.payload_type, event.channels), (101, 1))

    def test_parse_invalid(self) -> None:
        """Bad rtpmap values raise SDPParseError, which is a ValueError."""
        for value in ("31 LPC", "x PCMU/8000", "128 X/8000", "96 opus/x", "96 /8000",
                      "96 a/1/2/3", "96 opus/48000/"):
            with self.assertRaises(SDPParseError, msg=value):
                RTPPayloadFormat.parse(value)
        self.assertTrue(issubclass(SDPParseError, ValueError))

    def test_frame_size(self) -> None:
        """Samples per 20 ms: static table first, else the clock rate / 50."""
        self.assertEqual(RTPPayloadFormat.from_pt(0).frame_size, 160)
        self.assertEqual(RTPPayloadFormat.from_pt(9).frame_size, 160)
        self.assertEqual(RTPPayloadFormat.parse("111 opus/48000/2").frame_size, 960)
        self.assertEqual(RTPPayloadFormat.from_pt(96).frame_size, 160)
        self.assertEqual(RTPPayloadFormat.from_pt(31).frame_size, 1800)


SECTION = (
    "m=audio 49170 RTP/AVP 0 8 96 101\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
    "a=ptime:20\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=sendonly"
)


class MediaDescriptionTests(unittest.SynchronousTestCase):
    def test_folding(self) -> None:
        """a=rtpmap/a=fmtp are folded into ``fmt``, even when fmtp comes first."""
        media = MediaDescription.parse(SECTION)
        self.assertEqual([f.payload_type for f in media.fmt], [0, 8, 96, 101])
        self.assertEqual(media.get_format("96"), RTPPayloadFormat(96, None, "opus", 2, 48000))
        event = media.get_format(101)
        self.assertEqual((event.encoding_name, event.fmtp), ("telephone-event", "0-16"))
        self.assertEqual(media.get_format(8).encoding_name, "PCMA")
        self.assertIsNone(media.get_format(9))
        self.assertIsNone(media.get_format("x"))
        self.assertEqual(media.attributes, [Attribute("ptime", "20"), Attribute("sendonly")])

    def test_round_trip_interleaved(self) -> None:
        """The section is written back line for line, interleaving included."""
        self.assertEqual(bytes(MediaDescription.parse(SECTION)), SECTION.encode())

    def test_canonical_order_when_built(self) -> None:
        """Built objects serialise in RFC 4566 §5 order with rtpmap/fmtp before other a=."""
        media = MediaDescription(
            "audio", 4000, "RTP/AVP",
            [RTPPayloadFormat(8), RTPPayloadFormat(101, "0-16", "telephone-event", 1, 8000)],
            connection=ConnectionData("IN", "IP4", "192.0.2.1"),
            bandwidths=[Bandwidth("AS", 80)],
            attributes=[Attribute("ptime", "20"), Attribute("sendrecv")],
        )
        self.assertEqual(
            bytes(media),
            b"m=audio 4000 RTP/AVP 8 101\r\nc=IN IP4 192.0.2.1\r\nb=AS:80\r\n"
            b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            b"a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv",
        )

    def test_apply_attribute(self) -> None:
        """apply_attribute folds rtpmap/fmtp for listed payload types only."""
        media = MediaDescription("audio", 4000, "RTP/AVP", [RTPPayloadFormat(96)])
        self.assertTrue(media.apply_attribute(Attribute("fmtp", "96 useinbandfec=1")))
        self.assertTrue(media.apply_attribute(Attribute("rtpmap", "96 opus/48000/2")))
        self.assertEqual(media.fmt[0], RTPPayloadFormat(96, "useinbandfec=1", "opus", 2, 48000))
        self.assertFalse(media.apply_attribute(Attribute("rtpmap", "97 opus/48000/2")))
        self.assertFalse(media.apply_attribute(Attribute("rtpmap", "96 garbage")))
        self.assertFalse(media.apply_attribute(Attribute("fmtp", "x y")))
        self.assertFalse(media.apply_attribute(Attribute("ptime", "20")))
        self.assertFalse(media.apply_attribute(Attribute("rtpmap")))

    def test_unmatched_rtpmap_kept(self) -> None:
        """An rtpmap for a payload type not on the m= line stays an attribute."""
        media = MediaDescription.parse("m=audio 1 RTP/AVP 0\r\na=rtpmap:96 opus/48000/2")
        self.assertEqual(media.attributes, [Attribute("rtpmap", "96 opus/48000/2")])

    def test_direction(self) -> None:
        """RFC 3264 §5.1 direction attribute; the setter replaces it in place."""
        media = MediaDescription.parse("m=audio 1 RTP/AVP 0\r\na=ptime:20\r\na=sendonly\r\na=x")
        self.assertEqual(media.direction, "sendonly")
        media.direction = "inactive"
        self.assertEqual(bytes(media), b"m=audio 1 RTP/AVP 0\r\na=ptime:20\r\na=inactive\r\na=x")
        media.direction = None
        self.assertIsNone(media.direction)
        media.direction = "recvonly"
        self.assertEqual(media.attributes[-1], Attribute("recvonly"))
        with self.assertRaises(ValueError):
            media.direction = "sideways"

    def test_helpers(self) -> None:
        """a=ptime (RFC 4566 §6), a=rtcp (RFC 3605), a=rtcp-mux (RFC 5761)."""
        media = MediaDescription.parse(
            "m=audio 5004 RTP/AVP 0\r\na=ptime:30\r\na=rtcp:5005 IN IP4 192.0.2.1\r\na=rtcp-mux"
        )
        self.assertEqual((media.ptime, media.rtcp_port, media.rtcp_mux), (30, 5005, True))
        bare = MediaDescription.parse("m=audio 5004 RTP/AVP 0\r\na=ptime:x\r\na=rtcp:99999")
        self.assertEqual((bare.ptime, bare.rtcp_port, bare.rtcp_mux), (None, None, False))
        self.assertEqual(bare.get_attributes("ptime"), [Attribute("ptime", "x")])

    def test_crypto_view(self) -> None:
        """RFC 4568 §9.1 a=crypto: tag, suite, inline key params with lifetime and MKI."""
        media = MediaDescription.parse(
            "m=audio 1 RTP/SAVP 0\r\n"
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4 UNENCRYPTED_SRTCP\r\n"
            "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline\r\n"
            f"a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"
        )
        first, third = media.crypto
        self.assertEqual((first.tag, first.suite), (1, "AES_CM_128_HMAC_SHA1_80"))
        (param,) = first.key_params
        self.assertEqual((param.method, param.lifetime, param.mki), ("inline", "2^20", "1:4"))
        self.assertEqual(len(param.key_salt_bytes), 30)
        self.assertEqual(first.session_params, ("UNENCRYPTED_SRTCP",))
        self.assertEqual(third.key_params[0].lifetime, None)
        self.assertEqual(
            str(first), f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4 UNENCRYPTED_SRTCP"
        )
        self.assertNotIn(KEY, repr(first))
        self.assertNotIn(KEY, repr(media))

    def test_crypto_errors_hide_key(self) -> None:
        for value in (f"x AES inline:{KEY}", f"1 AES inline:{KEY}|a|b|c", "1 AES"):
            with self.assertRaises(SDPParseError) as ctx:
                CryptoAttribute.parse(value)
            self.assertNotIn(KEY, str(ctx.exception))
        param = CryptoAttribute.parse("1 AES inline:!!!!").key_params[0]
        with self.assertRaises(SDPParseError):
            param.key_salt_bytes  # noqa: B018

    def test_non_rtp_formats(self) -> None:
        """RFC 4566 §5.14: non-RTP protocols keep their fmt tokens as text."""
        media = MediaDescription.parse("m=application 9 UDP/DTLS/SCTP webrtc-datachannel")
        self.assertEqual((media.fmt, media.formats), ([], ["webrtc-datachannel"]))
        self.assertEqual(bytes(media), b"m=application 9 UDP/DTLS/SCTP webrtc-datachannel")
        t38 = MediaDescription.parse("m=image 0 udptl t38")
        self.assertEqual(t38.formats, ["t38"])

    def test_port_count(self) -> None:
        """RFC 4566 §5.14 ``<port>/<number of ports>``."""
        media = MediaDescription.parse("m=video 49170/2 RTP/AVP 31")
        self.assertEqual((media.port, media.port_count), (49170, 2))
        self.assertEqual(bytes(media), b"m=video 49170/2 RTP/AVP 31")

    def test_bad_m_lines(self) -> None:
        """RFC 4566 §5.14 m= grammar violations raise SDPParseError naming the line."""
        for line in (
            "m=audio", "m=audio 5004 RTP/AVP", "m=audio x RTP/AVP 0", "m=audio 70000 RTP/AVP 0",
            "m=audio -1 RTP/AVP 0", "m=audio 5004 RTP/AVP 128", "m=audio 5004 RTP/AVP pcmu",
            "m=audio 5004/x RTP/AVP 0",
        ):
            with self.assertRaises(SDPParseError, msg=line) as ctx:
                MediaDescription.parse(line)
            self.assertIn("line 1", str(ctx.exception))
        with self.assertRaises(SDPParseError):
            MediaDescription.parse("a=ptime:20")

    def test_control_characters_rejected(self) -> None:
        """RFC 4566 §9: text excludes NUL, CR and LF inside a line."""
        for section in ("m=audio 1 RTP/AVP 0\r\na=x\ry", "m=audio 1 RTP/AVP 0\na=\x00"):
            with self.assertRaises(SDPParseError) as ctx:
                MediaDescription.parse(section)
            self.assertIn("line 2", str(ctx.exception))

    def test_session_lines_rejected(self) -> None:
        """RFC 4566 §5: o=, t= ... are session-level only; a second m= starts a new section."""
        for extra in ("t=0 0", "o=- 1 1 IN IP4 h", "m=audio 2 RTP/AVP 0", "x=1", "c=IN IP4"):
            with self.assertRaises(SDPParseError, msg=extra) as ctx:
                MediaDescription.parse(f"m=audio 1 RTP/AVP 0\r\n{extra}")
            self.assertIn("line 2", str(ctx.exception))


class FieldTests(unittest.SynchronousTestCase):
    def test_descriptors(self) -> None:
        """The reference's field descriptors parse plain values."""
        self.assertEqual(IntField("v", "version").parse("0"), 0)
        self.assertEqual(StrField("s", "name").parse(" x "), " x ")
        self.assertIsInstance(StrField("s", "name"), Field)
        with self.assertRaises(SDPParseError):
            IntField("v", "version").parse("zero")


def key_leaked(key: str, text: str, window: int = 6) -> str | None:
    """The first *window*-character run of *key* found in *text*, if any."""
    for start in range(len(key) - window + 1):
        if key[start : start + window] in text:
            return key[start : start + window]
    return None


def malformed_crypto_lines(key: str) -> list[str]:
    """``a=crypto`` values with the key where another token belongs (issue 14 finding 12)."""
    suite = "AES_CM_128_HMAC_SHA1_80"
    return [
        f"1 {suite} X inline:{key}",  # the key-param read as a session parameter
        f"1 {suite} inline:{key[:20]} {key[20:]}",  # the key split by a space
        f"1 {suite} inline:{key} {key}",
        f"1 {suite} inline:{key} UNENCRYPTED_SRTP={key}",
        f"1 {key} inline:{key}",  # the key where the suite belongs
        f"1 inline:{key} {suite}",
        f"{key} {suite} inline:{key}",  # ... or the tag
        f"1 {suite} {key}:{key}",  # ... or the key method
        f"1 {suite} inline:{key}|{key}",  # ... or the lifetime
        f"1 {suite} inline:{key}|2^20|{key}:{key}",  # ... or the MKI
        f"1 {suite} inline:{key}!",
        f"1 {suite} inline:{key};inline:{key}",
    ]


class SDESTests(unittest.SynchronousTestCase):
    """RFC 4568 a=crypto: the one CryptoAttribute, as SDP syntax and as SRTP keying."""

    key = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CB"  # 30 bytes

    def test_errors_never_quote_key_material(self) -> None:
        """Issue 14 finding 12: no SDESError quotes key characters, however the line is
        malformed (before: "unsupported session parameter 'inline:ZGVmZ2hpamtsb'", 13 key
        characters that reached the 488's log line and reason)."""
        for value in malformed_crypto_lines(self.key):
            with self.assertRaises(SDESError, msg=value) as ctx:
                CryptoAttribute.parse_supported(value)
            self.assertIsNone(key_leaked(self.key, str(ctx.exception)), value)

    def test_registered_names_still_named(self) -> None:
        """Errors keep naming what the RFC registries define, so they stay useful."""
        with self.assertRaises(SDESError) as ctx:
            CryptoAttribute.parse_supported(f"1 F8_128_HMAC_SHA1_80 inline:{self.key}")
        self.assertIn("F8_128_HMAC_SHA1_80", str(ctx.exception))
        with self.assertRaises(SDESError) as ctx:
            CryptoAttribute.parse_supported(
                f"1 AES_CM_128_HMAC_SHA1_80 inline:{self.key} UNENCRYPTED_SRTP"
            )
        self.assertIn("UNENCRYPTED_SRTP", str(ctx.exception))

    def test_syntax_parse_is_lenient_supported_parse_is_not(self) -> None:
        """RFC 4568 §9.1 grammar vs what we key SRTP with (§6.1: one inline key, no MKI)."""
        value = f"1 AES_CM_128_HMAC_SHA1_80 inline:{self.key}|2^20|1:4"
        self.assertEqual(CryptoAttribute.parse(value).key_params[0].mki, "1:4")
        with self.assertRaises(SDESError):
            CryptoAttribute.parse_supported(value)
        self.assertTrue(issubclass(SDESError, SDPParseError))

    def test_repr_hides_key_and_unknown_tokens(self) -> None:
        """A malformed line's repr shows neither its key nor a token that may be one."""
        crypto = CryptoAttribute.parse(f"1 {self.key} inline:{self.key} {self.key}")
        self.assertIsNone(key_leaked(self.key, repr(crypto)))

    def test_generated_key_round_trips(self) -> None:
        """RFC 4568 §6.1: a generated line parses back to the same attribute and key."""
        crypto = CryptoAttribute.generate(tag=3, suite="AEAD_AES_128_GCM")
        self.assertEqual(CryptoAttribute.parse_supported(crypto.to_sdp()), crypto)
        self.assertEqual(len(crypto.master), SUITES["AEAD_AES_128_GCM"].master_length)
