"""Tests for voiptwisted.sdp.description.SessionDescription: round trips, contents, errors.

Fixtures in ``fixtures/`` are stored with LF line ends (except the captured
baresip offer, stored byte-exact with CRLF); ``bytes()`` always writes CRLF, so
the round trip of an LF fixture is compared with its CRLF form.  That is the only
normalisation.
"""

import pathlib

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from voiptwisted.sdp import (
    MAX_MEDIA,
    MAX_SIZE,
    Attribute,
    Bandwidth,
    ConnectionData,
    MediaDescription,
    Origin,
    RTPPayloadFormat,
    SDPParseError,
    SessionDescription,
    Timing,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
KEY = "79UOHzH7/1EKODHp2ThQykpVCAhVzGhSmbA8P8K6"


def fixture(name: str) -> bytes:
    """The fixture with CRLF line ends."""
    data = (FIXTURES / name).read_bytes()
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.glob("*.sdp"))


MINIMAL = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n"


class RoundTripTests(unittest.SynchronousTestCase):
    def test_fixtures_round_trip(self) -> None:
        """Every fixture (baresip, Asterisk, FreeSWITCH, Linphone, Chrome, RFC 4566 §5 example)
        comes back byte for byte from CRLF input, and as its CRLF form from LF input."""
        names = fixture_names()
        self.assertGreaterEqual(len(names), 10)
        for name in names:
            crlf = fixture(name)
            lf = crlf.replace(b"\r\n", b"\n")
            self.assertEqual(bytes(SessionDescription.parse(crlf)), crlf, name)
            self.assertEqual(bytes(SessionDescription.parse(lf)), crlf, name)
            self.assertEqual(bytes(SessionDescription.parse(crlf.decode())), crlf, name)
            self.assertEqual(SessionDescription.parse(lf), SessionDescription.parse(crlf), name)

    def test_captured_baresip_exact(self) -> None:
        """A real offer captured from baresip 1.0.0 (SDES) round-trips unchanged."""
        raw = (FIXTURES / "baresip_1.0.0_captured_offer.sdp").read_bytes()
        self.assertIn(b"\r\n", raw)
        sd = SessionDescription.parse(raw)
        self.assertEqual(bytes(sd), raw)
        (crypto,) = sd.media[0].crypto
        self.assertEqual((crypto.tag, crypto.suite), (1, "AES_CM_128_HMAC_SHA1_80"))
        self.assertEqual(len(crypto.key_params[0].key_salt_bytes), 30)
        self.assertEqual(sd.get_attribute("tool"), Attribute("tool", "baresip 1.0.0"))
        self.assertNotIn(KEY, repr(sd))

    def test_trailing_blank_lines_dropped(self) -> None:
        """Empty lines at the very end are tolerated and not written back."""
        self.assertEqual(bytes(SessionDescription.parse(MINIMAL + b"\r\n\r\n")), MINIMAL)
        self.assertEqual(bytes(SessionDescription.parse(MINIMAL[:-2])), MINIMAL)

    def test_quirky_layout(self) -> None:
        """Odd spacing, out-of-order c=, duplicate and unmatched rtpmaps survive verbatim."""
        sd = SessionDescription.parse(fixture("quirky_layout.sdp"))
        self.assertEqual(sd.name, "")
        self.assertEqual(sd.origin.username, "user")
        media = sd.media[0]
        self.assertEqual(media.get_format(101).fmtp, "0-15")
        self.assertEqual(media.get_format(96).fmtp, "")
        self.assertIn(Attribute("rtpmap", "101 telephone-event/8000"), media.attributes)
        self.assertIn(Attribute("rtpmap", "120 unused/8000"), media.attributes)
        self.assertEqual(media.connection, ConnectionData("IN", "IP4", "192.0.2.2"))
        self.assertIsNone(media.ptime)


class ContentTests(unittest.SynchronousTestCase):
    def test_chrome_offer(self) -> None:
        """WebRTC offer: BUNDLE group, ICE/DTLS attributes, rtcp-fb, extmap, ssrc, msid."""
        sd = SessionDescription.parse(fixture("chrome_offer.sdp"))
        self.assertEqual(sd.get_attribute("group"), Attribute("group", "BUNDLE 0 1 2"))
        self.assertIsNone(sd.connection)
        audio, video, data = sd.media
        self.assertEqual(audio.proto, "UDP/TLS/RTP/SAVPF")
        self.assertEqual(audio.get_format(111), RTPPayloadFormat(
            111, "minptime=10;useinbandfec=1", "opus", 2, 48000))
        self.assertEqual(audio.get_format(63).fmtp, "111/111")
        self.assertTrue(audio.rtcp_mux)
        self.assertEqual(audio.rtcp_port, 9)
        self.assertEqual(len(audio.get_attributes("extmap")), 4)
        self.assertEqual(len(video.get_attributes("rtcp-fb")), 15)
        self.assertEqual(video.get_format(97).fmtp, "apt=96")
        self.assertEqual(data.formats, ["webrtc-datachannel"])
        self.assertEqual(sd.media_connection(data), ConnectionData("IN", "IP4", "0.0.0.0"))
        self.assertEqual(sd.media_direction(video), "sendrecv")
        self.assertNotIn("0eGD9Nkl4HL1yCgWAKpv7pYq", repr(sd))

    def test_linphone_ipv6(self) -> None:
        """IN IP6 addresses; an a=fmtp for a static payload type without a=rtpmap."""
        sd = SessionDescription.parse(fixture("linphone_offer_ipv6.sdp"))
        self.assertEqual(sd.origin.addrtype, "IP6")
        self.assertEqual(sd.connection, ConnectionData("IN", "IP6", "2001:db8::10"))
        self.assertEqual(sd.bandwidths, [Bandwidth("AS", 380)])
        audio, video = sd.media
        g729 = audio.get_format(18)
        self.assertEqual((g729.encoding_name, g729.fmtp), ("G729", "annexb=yes"))
        self.assertEqual(audio.rtcp_port, 7079)
        self.assertEqual(video.bandwidths, [Bandwidth("TIAS", 1000000)])
        self.assertEqual(sd.media_direction(audio), "sendrecv")
        self.assertEqual(sd.media_direction(video), "recvonly")

    def test_loopback_ipv6(self) -> None:
        sd = SessionDescription.parse(fixture("loopback_ipv6.sdp"))
        self.assertEqual(sd.connection.connection_address, "::1")
        self.assertEqual(sd.media_direction(sd.media[0]), "inactive")

    def test_rfc4566_fields(self) -> None:
        """RFC 4566 §5: i= u= e= p= c= multicast, t= with r= (§5.10), z= (§5.11), k= (§5.12)."""
        sd = SessionDescription.parse(fixture("rfc4566_example.sdp"))
        self.assertEqual(sd.info, "A Seminar on the session description protocol")
        self.assertEqual(sd.uri, "http://www.example.com/seminars/sdp.pdf")
        self.assertEqual(sd.emails, ["j.doe@example.com (Jane Doe)"])
        self.assertEqual(sd.phones, ["+1 617 555-6011"])
        self.assertEqual(sd.timings, [
            Timing(2873397496, 2873404696, ("604800 3600 0 90000", "7d 1h 0 25h")),
            Timing(0, 0),
        ])
        self.assertEqual(sd.zone, "2882844526 -1h 2898848070 0")
        self.assertEqual(sd.key, "prompt")
        self.assertEqual(sd.direction, "recvonly")
        self.assertEqual(sd.media_direction(sd.media[0]), "recvonly")
        self.assertEqual(sd.media[1].title, "Video feed")
        self.assertEqual(sd.media[1].key, "prompt")
        self.assertEqual(sd.media[2].port_count, 2)
        self.assertEqual(sd.media[3].formats, ["wb"])

    def test_asterisk_hold_and_rejected_stream(self) -> None:
        """A sendonly answer (hold, RFC 3264 §8.4) with a rejected (port 0) video stream."""
        sd = SessionDescription.parse(fixture("asterisk_answer_hold.sdp"))
        audio, video = sd.media
        self.assertEqual(sd.media_direction(audio), "sendonly")
        self.assertEqual(video.port, 0)
        self.assertEqual(sd.bandwidths, [Bandwidth("CT", 384)])

    def test_freeswitch(self) -> None:
        """a=crypto kept verbatim in order; a=rtcp with address; a=rtcp-mux in the answer."""
        offer = SessionDescription.parse(fixture("freeswitch_offer.sdp"))
        media = offer.media[0]
        self.assertEqual([c.tag for c in media.crypto], [1, 2])
        self.assertEqual(media.attributes[0].name, "crypto")
        self.assertEqual(media.rtcp_port, 24681)
        self.assertEqual(media.ptime, 20)
        answer = SessionDescription.parse(fixture("freeswitch_answer.sdp"))
        self.assertTrue(answer.media[0].rtcp_mux)


class ModificationTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.text = fixture("asterisk_offer.sdp")
        self.sd = SessionDescription.parse(self.text)

    def test_changed_field_rewritten_in_place(self) -> None:
        """Changing one value rewrites only its line."""
        self.sd.origin = Origin("-", "1908394510", "1908394511", "IN", "IP4", "203.0.113.10")
        self.sd.media[0].port = 4000
        expected = self.text.replace(b"1908394510 1908394510", b"1908394510 1908394511")
        expected = expected.replace(b"m=audio 15924", b"m=audio 4000")
        self.assertEqual(bytes(self.sd), expected)

    def test_removed_format_drops_its_lines(self) -> None:
        media = self.sd.media[0]
        media.fmt = [f for f in media.fmt if f.payload_type != 3]
        out = bytes(self.sd)
        self.assertNotIn(b"GSM", out)
        self.assertIn(b"m=audio 15924 RTP/AVP 0 8 111 101\r\na=rtpmap:0 PCMU/8000\r\n", out)

    def test_added_format_after_last_rtpmap(self) -> None:
        self.sd.media[0].fmt.append(RTPPayloadFormat(96, "useinbandfec=1", "opus", 2, 48000))
        self.assertIn(
            b"a=fmtp:101 0-16\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n"
            b"a=ptime:20\r\n", bytes(self.sd)
        )

    def test_direction_replaced_in_place(self) -> None:
        self.sd.media[0].direction = "sendonly"
        self.assertEqual(bytes(self.sd), self.text.replace(b"a=sendrecv", b"a=sendonly"))

    def test_session_direction_overridden(self) -> None:
        """RFC 3264 §5.1: the media-level direction overrides the session-level one."""
        self.sd.direction = "recvonly"
        self.assertEqual(self.sd.direction, "recvonly")
        self.assertEqual(self.sd.media_direction(self.sd.media[0]), "sendrecv")
        self.sd.media[0].direction = None
        self.assertEqual(self.sd.media_direction(self.sd.media[0]), "recvonly")
        reparsed = SessionDescription.parse(bytes(self.sd))
        self.assertEqual(reparsed, self.sd)


class CreateTests(unittest.SynchronousTestCase):
    def test_defaults(self) -> None:
        """Keyword construction defaults to v=0, s=-, t=0 0 (RFC 4566 §5)."""
        sd = SessionDescription(origin=Origin("-", "7", "0", "IN", "IP4", "192.0.2.1"))
        self.assertEqual(bytes(sd), b"v=0\r\no=- 7 0 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n")

    def test_create(self) -> None:
        """create() fills o= and c=, choosing IP6 for IPv6 hosts (RFC 4566 §5.7)."""
        media = MediaDescription(
            "audio", 20000, "RTP/AVP", [RTPPayloadFormat(8), RTPPayloadFormat(0)],
            attributes=[Attribute("ptime", "20"), Attribute("sendrecv")],
        )
        sd = SessionDescription.create("::1", media=[media], session_id=42)
        self.assertEqual(
            bytes(sd),
            b"v=0\r\no=- 42 0 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
            b"m=audio 20000 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
            b"a=ptime:20\r\na=sendrecv\r\n",
        )
        self.assertEqual(SessionDescription.parse(bytes(sd)), sd)
        v4 = SessionDescription.create("192.0.2.1", "198.51.100.2")
        self.assertEqual(v4.origin.addrtype, "IP4")
        self.assertEqual(v4.connection, ConnectionData("IN", "IP4", "198.51.100.2"))
        self.assertTrue(v4.origin.sess_id.isdigit())
        self.assertEqual(SessionDescription.create("example.com").origin.addrtype, "IP4")


class ErrorTests(unittest.SynchronousTestCase):
    def assertParseError(self, data: bytes, *fragments: str) -> SDPParseError:
        with self.assertRaises(SDPParseError) as ctx:
            SessionDescription.parse(data)
        for fragment in fragments:
            self.assertIn(fragment, str(ctx.exception))
        return ctx.exception

    def test_required_lines(self) -> None:
        """RFC 4566 §5: v= first; o=, s= and t= are required."""
        self.assertParseError(b"o=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n", "line 1", "v=")
        self.assertParseError(b"v=0\r\ns=-\r\nt=0 0\r\n", "missing o=")
        self.assertParseError(b"v=0\r\no=- 1 1 IN IP4 h\r\nt=0 0\r\n", "missing s=")
        self.assertParseError(b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\n", "missing t=")
        self.assertParseError(b"", "empty")
        self.assertParseError(b"\r\n\r\n", "empty")

    def test_version(self) -> None:
        """RFC 4566 §5.1: the version is 0."""
        self.assertParseError(MINIMAL.replace(b"v=0", b"v=1"), "line 1", "version")
        self.assertParseError(MINIMAL.replace(b"v=0", b"v=x"), "line 1")

    def test_duplicates(self) -> None:
        self.assertParseError(MINIMAL + b"o=- 1 1 IN IP4 h\r\n", "line 5", "more than one o=")
        self.assertParseError(MINIMAL + b"s=x\r\n", "line 5")
        self.assertParseError(MINIMAL + b"c=IN IP4 h\r\nc=IN IP4 h\r\n", "line 6")
        self.assertParseError(MINIMAL + b"m=audio 1 RTP/AVP 0\r\ni=a\r\ni=b\r\n", "line 7")

    def test_bad_lines_named(self) -> None:
        """Bad m=, c=, o=, b=, t= lines raise SDPParseError naming line number and text."""
        cases = {
            b"m=audio port RTP/AVP 0": "port",
            b"m=audio 5004 RTP/AVP": "m=",
            b"m=audio 5004 RTP/AVP 0 x": "payload type",
            b"c=IN IP4": "c=",
            b"b=AS:lots": "bandwidth",
            b"t=now later": "start-time",
            b"a=": "attribute name",
        }
        for line, fragment in cases.items():
            self.assertParseError(MINIMAL + line + b"\r\n", "line 5", fragment)

    def test_unknown_type_letter(self) -> None:
        """RFC 4566 §5: a description with an unknown type letter must be ignored -> error."""
        self.assertParseError(MINIMAL + b"x=foo\r\n", "line 5", "unknown line type", "§5")
        self.assertParseError(MINIMAL + b"m=audio 1 RTP/AVP 0\r\nY=1\r\n", "line 6")

    def test_malformed_lines(self) -> None:
        """A line without '=', whitespace around '=', multi-letter types, NUL, bare CR."""
        self.assertParseError(MINIMAL + b"hello\r\n", "line 5", "no '='")
        self.assertParseError(MINIMAL + b"a = b\r\n", "line 5", "one letter")
        self.assertParseError(MINIMAL + b"ab=c\r\n", "line 5")
        self.assertParseError(MINIMAL + b"\r\na=x\r\n", "line 5")
        self.assertParseError(MINIMAL + b"a=x\x00\r\n", "NUL")
        self.assertParseError(MINIMAL + b"a=x\ry\r\n", "line 5", "bare CR")

    def test_placement(self) -> None:
        """Session-only lines inside a media section, and r= not after t=, are errors."""
        media = b"m=audio 1 RTP/AVP 0\r\n"
        for line in (b"t=0 0", b"o=- 1 1 IN IP4 h", b"s=x", b"r=1 2 3", b"z=0 0", b"v=0"):
            self.assertParseError(MINIMAL + media + line + b"\r\n", "line 6")
        self.assertParseError(MINIMAL + b"a=x\r\nr=1d 1h 0\r\n", "line 6", "r=")

    def test_secrets_not_in_errors(self) -> None:
        """a= and k= line text is not quoted in error messages (keys, ICE passwords)."""
        error = self.assertParseError(MINIMAL + b"a=:" + KEY.encode() + b"\r\n", "line 5")
        self.assertNotIn(KEY, str(error))

    def test_size_limits(self) -> None:
        """Bodies over MAX_SIZE bytes and more than MAX_MEDIA m= sections are refused."""
        filler = b"a=x:" + b"y" * 990 + b"\r\n"
        big = MINIMAL + filler * (MAX_SIZE // len(filler) + 1)
        self.assertParseError(big, "limit")
        ok = MINIMAL + b"m=audio 1 RTP/AVP 0\r\n" * MAX_MEDIA
        self.assertEqual(len(SessionDescription.parse(ok).media), MAX_MEDIA)
        self.assertParseError(ok + b"m=audio 1 RTP/AVP 0\r\n", f"more than {MAX_MEDIA}")

    def test_invalid_utf8_round_trips(self) -> None:
        """Non-UTF-8 bytes (e.g. Latin-1 in s=) are kept exactly, not rejected."""
        data = MINIMAL.replace(b"s=-", b"s=Caf\xe9")
        self.assertEqual(bytes(SessionDescription.parse(data)), data)


_TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFXYZ0123456789-_.+", min_size=1, max_size=12)
_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00")
_TEXT = st.text(_CHARS, max_size=20)
_UINT = st.integers(0, 2**40)

_attributes = st.builds(
    Attribute, _TOKEN.filter(lambda n: n not in ("rtpmap", "fmtp")), st.none() | _TEXT
)
_connection = st.builds(ConnectionData, _TOKEN, _TOKEN, _TOKEN)
_bandwidth = st.builds(Bandwidth, _TOKEN, _UINT)
_formats = st.builds(
    RTPPayloadFormat,
    payload_type=st.integers(0, 127),
    fmtp=st.none() | _TEXT,
    encoding_name=st.none() | _TOKEN,
    channels=st.integers(1, 8),
    sample_rate=st.none() | st.integers(1, 200000),
).filter(
    lambda f: (f.encoding_name is None) == (f.sample_rate is None)
    and (f.encoding_name is not None or f.channels == 1)
)


@st.composite
def _media(draw: st.DrawFn) -> MediaDescription:
    rtp = draw(st.booleans())
    fmt = draw(st.lists(_formats, min_size=1, max_size=5, unique_by=lambda f: f.payload_type))
    return MediaDescription(
        media=draw(_TOKEN),
        port=draw(st.integers(0, 65535)),
        proto=draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF"]))
        if rtp else draw(st.sampled_from(["udptl", "UDP/DTLS/SCTP", "TCP/MSRP"])),
        fmt=fmt if rtp else [],
        formats=[] if rtp else draw(st.lists(_TOKEN, min_size=1, max_size=3)),
        title=draw(st.none() | _TEXT),
        connection=draw(st.none() | _connection),
        bandwidths=draw(st.lists(_bandwidth, max_size=2)),
        attributes=draw(st.lists(_attributes, max_size=5)),
        port_count=draw(st.none() | st.integers(1, 10)),
        key=draw(st.none() | _TEXT),
    )


_descriptions = st.builds(
    SessionDescription,
    origin=st.builds(Origin, _TOKEN, _UINT.map(str), _UINT.map(str), _TOKEN, _TOKEN, _TOKEN),
    name=_TEXT,
    info=st.none() | _TEXT,
    uri=st.none() | _TEXT,
    emails=st.lists(_TEXT, max_size=2),
    phones=st.lists(_TEXT, max_size=2),
    connection=st.none() | _connection,
    bandwidths=st.lists(_bandwidth, max_size=2),
    timings=st.lists(
        st.builds(Timing, _UINT, _UINT, st.lists(_TEXT, max_size=2).map(tuple)),
        min_size=1, max_size=2,
    ),
    zone=st.none() | _TEXT,
    key=st.none() | _TEXT,
    attributes=st.lists(_attributes, max_size=5),
    media=st.lists(_media(), max_size=3),
)


class PropertyTests(unittest.SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(_descriptions)
    def test_objects_round_trip(self, sd: SessionDescription) -> None:
        """Any description -> bytes -> parse gives an equal description, and the same bytes."""
        data = bytes(sd)
        parsed = SessionDescription.parse(data)
        self.assertEqual(parsed, sd)
        self.assertEqual(bytes(parsed), data)
