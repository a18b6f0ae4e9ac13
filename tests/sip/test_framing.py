"""Tests for voiptwisted.sip.framing."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.sip.framing import PING, PONG, FramingError, StreamFramer
from voiptwisted.sip.message import Message, SIPParseError


def message(body: bytes = b"", compact: bool = False) -> bytes:
    length = b"l" if compact else b"Content-Length"
    return (
        b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n"
        b"From: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n"
        + length + b": " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


ONE = message(b"hello\r\n\r\nworld")
TWO = message(b"", compact=True)


class FramingTests(SynchronousTestCase):
    def test_whole_messages(self) -> None:
        framer = StreamFramer()
        self.assertEqual(framer.feed(ONE + TWO + ONE), [ONE, TWO, ONE])
        self.assertEqual(framer.buffered, 0)
        Message.parse(ONE, strict=True)

    def test_split_anywhere(self) -> None:
        """RFC 3261 §18.3: framing is independent of how the stream is chunked."""
        stream = PING + ONE + TWO
        for cut in range(1, len(stream)):
            with self.subTest(cut=cut):
                framer = StreamFramer(eager_pong=False)
                out = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
                self.assertEqual(out, [PING, ONE, TWO])

    def test_byte_by_byte(self) -> None:
        framer = StreamFramer(eager_pong=False)
        out: list[bytes] = []
        for byte in PING + ONE + PING + TWO:
            out += framer.feed(bytes([byte]))
        self.assertEqual(out, [PING, ONE, PING, TWO])

    def test_keepalives(self) -> None:
        """RFC 5626 §4.4.1: CRLFCRLF is a ping, a lone CRLF a pong."""
        framer = StreamFramer()
        self.assertEqual(framer.feed(PING), [PING])
        self.assertEqual(framer.feed(PONG), [PONG])
        self.assertEqual(framer.feed(PONG + ONE), [PONG, ONE])
        self.assertEqual(framer.feed(PING + PONG), [PING, PONG])

    def test_server_side_waits_for_a_whole_ping(self) -> None:
        """RFC 5626 §4.4.1: with eager_pong=False a half ping is not reported as a pong."""
        framer = StreamFramer(eager_pong=False)
        self.assertEqual(framer.feed(b"\r\n"), [])
        self.assertEqual(framer.feed(b"\r\n"), [PING])
        self.assertEqual(framer.feed(b"\r\nI"), [PONG])

    def test_missing_content_length_is_zero(self) -> None:
        """RFC 3261 §18.3 makes Content-Length mandatory on streams; a message without
        one is framed with an empty body so the stream stays in sync."""
        bare = ONE.split(b"Content-Length")[0] + b"\r\n"
        framer = StreamFramer()
        self.assertEqual(framer.feed(bare + TWO), [bare, TWO])
        self.assertEqual(Message.parse(bare).body, b"")

    def test_header_too_large(self) -> None:
        """Headers over max_header_size raise 513 at once, without waiting for the rest."""
        framer = StreamFramer(max_header_size=1024)
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\n")
        with self.assertRaises(FramingError) as ctx:
            framer.feed(b"X-Filler: " + b"a" * 2000)
        self.assertEqual(ctx.exception.status_code, 513)
        self.assertEqual(framer.buffered, 0)
        self.assertRaises(FramingError, framer.feed, ONE)

    def test_header_block_too_large_even_when_complete(self) -> None:
        framer = StreamFramer(max_header_size=64)
        with self.assertRaises(FramingError) as ctx:
            framer.feed(ONE)
        self.assertEqual(ctx.exception.status_code, 513)

    def test_default_header_limit_is_64k(self) -> None:
        framer = StreamFramer()
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 65000)
        self.assertRaises(FramingError, framer.feed, b"a" * 1000)

    def test_body_too_large(self) -> None:
        """A Content-Length over max_body_size raises 513 as soon as the header is read."""
        framer = StreamFramer()
        head = ONE.split(b"Content-Length")[0] + b"Content-Length: 2000000\r\n\r\n"
        with self.assertRaises(FramingError) as ctx:
            framer.feed(head)
        self.assertEqual(ctx.exception.status_code, 513)
        self.assertEqual(StreamFramer(max_body_size=4).feed(message(b"1234")), [message(b"1234")])
        self.assertRaises(FramingError, StreamFramer(max_body_size=4).feed, message(b"12345"))

    def test_bad_content_length(self) -> None:
        """Malformed or conflicting Content-Length: 400 (RFC 4475 §3.1.2.3, §3.2.10)."""
        base = ONE.split(b"Content-Length")[0]
        for bad in (b"Content-Length: -1\r\n", b"l: 1x\r\n",
                    b"Content-Length: 1\r\nContent-Length: 2\r\n"):  # fmt: skip
            with self.subTest(bad=bad):
                with self.assertRaises(FramingError) as ctx:
                    StreamFramer().feed(base + bad + b"\r\n")
                self.assertEqual(ctx.exception.status_code, 400)
                self.assertIsInstance(ctx.exception, SIPParseError)

    def test_folded_content_length(self) -> None:
        """RFC 3261 §7.3.1: a folded Content-Length is still found."""
        data = ONE.replace(b"Content-Length: ", b"Content-Length:\r\n ")
        self.assertEqual(StreamFramer().feed(data + TWO), [data, TWO])

    def test_content_length_in_every_shape(self) -> None:
        """RFC 3261 §7.3.1, §20.14: the length is read the same whether the one-line quick
        reading applies (issue 16) or not: LWS around the colon, any case, the compact form,
        look-alike names, folding elsewhere, an absent header."""
        base = ONE.split(b"Content-Length")[0]
        shapes = {
            b"Content-Length: 5\r\n": 5,
            b"CONTENT-LENGTH \t:\t 5 \r\n": 5,
            b"content-length:5\r\n": 5,
            b"l: 5\r\n": 5,
            b"Content-Lengthy: 9\r\nContent-Length: 5\r\n": 5,
            b"X-Content-Length: 9\r\nContent-Length: 5\r\n": 5,
            b"Content-Length: 5\r\nLoad: 9\r\n": 5,
            b"Content-Length: 5\r\nl: 5\r\n": 5,
            b"Subject: a\r\n b\r\nContent-Length: 5\r\n": 5,
            b"Content-Length:\r\n 5\r\n": 5,
            b"Subject: none\r\n": 0,
        }
        for head, length in shapes.items():
            with self.subTest(head=head):
                data = base + head + b"\r\n" + b"x" * length
                self.assertEqual(StreamFramer().feed(data + TWO), [data, TWO])
        for bad in (b"Content-Length: 5\r\nl: 6\r\n", b"Content-Length: 0x5\r\n",
                    b"Content-Length: \xd9\xa5\r\n"):  # fmt: skip
            with self.subTest(bad=bad), self.assertRaises(FramingError):
                StreamFramer().feed(base + bad + b"\r\n")

    def test_stray_bytes(self) -> None:
        self.assertRaises(FramingError, StreamFramer().feed, b"\n\nINVITE")
