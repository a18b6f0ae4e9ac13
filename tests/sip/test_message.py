"""Tests for voiptwisted.sip.message."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.sip import SIPParseError as ExportedError
from voiptwisted.sip.headers import MAX_HEADER_LINES, MAX_ROUTING_VALUES, Headers
from voiptwisted.sip.message import Message, Request, Response, SIPParseError

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKaaa;rport\r\n"
    b"v: SIP/2.0/TLS proxy.example.com;branch=z9hG4bKbbb,"
    b" SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKccc\r\n"
    b"Max-Forwards: 70\r\n"
    b'f: "Alice" <sip:alice@example.com>;tag=abc\r\n'
    b"t: Bob <sip:bob@example.com>\r\n"
    b"i: call-1@example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"m: <sip:alice@192.0.2.1:5061;transport=tls>;expires=60\r\n"
    b"Subject: folded\r\n  subject\r\n"
    b"c: application/sdp\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"v=0\r\nEXTRA"
)


class ParseTests(SynchronousTestCase):
    def test_request_fields(self) -> None:
        m = Message.parse(INVITE)
        assert isinstance(m, Request)
        self.assertEqual((m.method, m.uri), ("INVITE", "sip:bob@example.com"))
        self.assertEqual(m.headers["Call-ID"], "call-1@example.com")
        self.assertEqual(m.call_id, "call-1@example.com")
        self.assertEqual(m.cseq, (1, "INVITE"))
        self.assertEqual(m.branch, "z9hG4bKaaa")
        self.assertEqual([v.branch for v in m.via], ["z9hG4bKaaa", "z9hG4bKbbb", "z9hG4bKccc"])
        self.assertEqual(m.top_via.port, 5061)
        self.assertEqual(m.local_tag, "abc")
        self.assertIsNone(m.remote_tag)
        self.assertEqual(m.from_.display_name, "Alice")
        self.assertEqual(m.to.uri, "sip:bob@example.com")
        self.assertEqual(m.contact[0].expires, 60)
        self.assertEqual(m.max_forwards, 70)
        self.assertEqual(m.content_type, "application/sdp")
        self.assertIsNone(m.expires)
        self.assertEqual(m.headers["Subject"], "folded subject")

    def test_body_is_content_length_octets(self) -> None:
        """RFC 3261 §18.3: the body is Content-Length octets; extra octets are dropped."""
        self.assertEqual(Message.parse(INVITE).body, b"v=0\r")

    def test_content_length_larger_than_data(self) -> None:
        """RFC 4475 §3.1.2.2: a Content-Length beyond the data is an error."""
        self.assertRaises(SIPParseError, Message.parse, INVITE.replace(b"l: 4", b"l: 40"))

    def test_missing_content_length_datagram(self) -> None:
        """RFC 3261 §18.3: without Content-Length a datagram's body runs to its end."""
        m = Message.parse(INVITE.replace(b"l: 4\r\n", b""))
        self.assertEqual(m.body, b"v=0\r\nEXTRA")

    def test_response(self) -> None:
        data = (
            b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 7 INVITE\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        m = Message.parse(data)
        assert isinstance(m, Response)
        self.assertEqual((m.status_code, m.phrase), (180, "Ringing"))
        self.assertEqual((m.local_tag, m.remote_tag, m.cseq), ("1", "2", (7, "INVITE")))
        self.assertEqual(bytes(m), data)

    def test_errors(self) -> None:
        """Only SIPParseError (a ValueError, exported by voiptwisted.sip) escapes."""
        self.assertIs(ExportedError, SIPParseError)
        self.assertTrue(issubclass(SIPParseError, ValueError))
        bad = [
            b"", b"garbage", b"text", INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),
            INVITE.replace(b"CSeq: 1", b"CSeq: 2147483648"),
            INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 256"),
            INVITE.replace(b"i: call-1@example.com\r\n", b""),
            INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards 70"),
            INVITE.replace(b"Max-Forwards", b"Max Forwards"),
            INVITE.replace(b"SIP/2.0\r\n", b"SIP/2.0\r\r\n", 1),
            INVITE.replace(b"l: 4", b"l: four"),
            b"SIP/2.0 99 Low\r\n\r\n", b"SIP/2.0 700 High\r\n\r\n",
        ]  # fmt: skip
        for data in bad:
            with self.subTest(data=data[:40]):
                self.assertRaises(SIPParseError, Message.parse, data)
        self.assertRaises(SIPParseError, Message.parse, "not bytes")  # type: ignore[arg-type]

    def test_status_code_is_three_ascii_digits(self) -> None:
        """RFC 3261 §25.1: Status-Code is 3DIGIT, and DIGIT is ASCII 0-9; other Unicode
        decimal digits (which int() would read) are refused."""
        good = (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
            b"To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 7 INVITE\r\n\r\n"
        )
        self.assertEqual(Message.parse(good).status_code, 200)
        for code in ("2\u0660\u0660", "\uff12\uff10\uff10", "2\u00b200"):
            with self.subTest(code=code), self.assertRaises(SIPParseError) as caught:
                Message.parse(good.replace(b"200", code.encode(), 1))
            self.assertEqual(caught.exception.status_code, 400)
        bare = Message.parse(good.replace(b"200 OK", b"200", 1))
        self.assertEqual((bare.status_code, bare.phrase), (200, ""))

    def test_line_breaks(self) -> None:
        """RFC 3261 §7: lines end with CRLF; a bare CR or LF inside the header block is
        an error, while other Unicode line separators are ordinary UTF-8 text."""
        for bad in (b"Subject: a\rVia: evil\r\n", b"Subject: a\nVia: evil\r\n"):
            with self.subTest(bad=bad):
                data = INVITE.replace(b"Max-Forwards: 70\r\n", bad)
                self.assertRaises(SIPParseError, Message.parse, data)
        text = "Subject: a\u2028b\x85c\r\n".encode()
        m = Message.parse(INVITE.replace(b"Max-Forwards: 70\r\n", text), strict=True)
        self.assertEqual(m.headers["Subject"], "a\u2028b\x85c")

    def test_unexpected_internal_errors_become_parse_errors(self) -> None:
        """Any internal failure is reported as SIPParseError, never as another type."""
        from voiptwisted.sip import message as module

        def boom(data: bytes) -> Message:
            raise RuntimeError("boom")

        self.patch(module, "_parse", boom)
        with self.assertRaises(SIPParseError) as ctx:
            Message.parse(INVITE)
        self.assertIn("RuntimeError", str(ctx.exception))

    def test_parsed_headers_keep_order_and_names(self) -> None:
        """RFC 3261 §7.3.1/§7.3.3: order kept, compact names expanded, LWS stripped."""
        h = Message.parse(INVITE).headers
        names = [name for name, _ in h.items()]
        self.assertEqual(names[:4], ["Via", "Via", "Max-Forwards", "From"])
        self.assertEqual(h.items()[3], ("From", '"Alice" <sip:alice@example.com>;tag=abc'))
        self.assertEqual(len(h.getlist("Via")), 3)
        self.assertEqual(h["v"], "SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKaaa;rport")

    def test_accessors_follow_header_changes(self) -> None:
        m = Message.parse(INVITE)
        self.assertEqual(
            (m.branch, m.local_tag, m.call_id), ("z9hG4bKaaa", "abc", "call-1@example.com")
        )
        m.headers["Via"] = "SIP/2.0/TLS h;branch=z9hG4bKnew"
        m.headers["From"] = "<sip:x@y>;tag=zz"
        m.headers["Call-ID"] = "c2"
        m.headers["CSeq"] = "5 INVITE"
        self.assertEqual((m.branch, m.local_tag, m.call_id), ("z9hG4bKnew", "zz", "c2"))
        self.assertEqual(m.cseq, (5, "INVITE"))
        self.assertEqual([v.branch for v in m.via], ["z9hG4bKnew"])
        built = Request("OPTIONS", "sip:a@b", {"To": "<sip:a@b>"})
        self.assertIsNone(built.remote_tag)
        built.headers["To"] = "<sip:a@b>;tag=t"
        self.assertEqual((built.remote_tag, built.to.tag), ("t", "t"))
        del built.headers["To"]
        self.assertRaises(SIPParseError, lambda: built.to)

    def test_cached_values_live_with_the_headers(self) -> None:
        """Derived values (Call-ID, CSeq, branch, tags, objects) are cached in the Headers:
        messages sharing one Headers see each change, and replacing ``headers`` gives the
        new fields' values at once."""
        parsed = Message.parse(INVITE)
        shared = Request("INVITE", "sip:bob@example.com", parsed.headers)
        self.assertEqual((shared.call_id, shared.branch), ("call-1@example.com", "z9hG4bKaaa"))
        self.assertEqual(len(shared.via), 3)
        parsed.headers.add("Via", "SIP/2.0/TLS h;branch=z9hG4bKlast")
        del parsed.headers["Call-ID"]
        self.assertEqual([v.branch for v in shared.via][-1], "z9hG4bKlast")
        self.assertRaises(SIPParseError, lambda: shared.call_id)
        parsed.headers = Message.parse(INVITE.replace(b"tag=abc", b"tag=def")).headers
        self.assertEqual((parsed.local_tag, parsed.from_.tag, parsed.call_id),
                         ("def", "def", "call-1@example.com"))  # fmt: skip
        self.assertEqual(shared.local_tag, "abc")

    def test_version_505(self) -> None:
        """RFC 3261 §8.2.2 (via 505): another SIP version carries status_code 505."""
        with self.assertRaises(SIPParseError) as ctx:
            Message.parse(INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1))
        self.assertEqual(ctx.exception.status_code, 505)

    def test_lazy_and_strict(self) -> None:
        """A malformed From parses lazily but fails on access and with strict=True."""
        data = INVITE.replace(b'f: "Alice" <sip:alice@example.com>', b'f: "Alice <sip:alice')
        m = Message.parse(data)
        self.assertRaises(SIPParseError, lambda: m.from_)
        self.assertRaises(SIPParseError, m.validate)
        self.assertRaises(SIPParseError, Message.parse, data, strict=True)
        Message.parse(INVITE, strict=True)


def with_headers(lines: list[str], base: bytes = INVITE) -> bytes:
    """*base* (an INVITE, Content-Length 4) with *lines* added after its first Via line."""
    head, _, rest = base.partition(b"\r\n")
    first_via, _, rest = rest.partition(b"\r\n")
    extra = "".join(line + "\r\n" for line in lines).encode()
    return head + b"\r\n" + first_via + b"\r\n" + extra + rest


class CountLimitTests(SynchronousTestCase):
    """Counts from the network are bounded: header lines, Via/Route/Record-Route values."""

    def test_header_lines_bounded(self) -> None:
        base = len(Message.parse(INVITE).headers.items())
        # INVITE has 12 physical header lines (its Subject is folded over two).
        fits = with_headers([f"X-Filler-{i}: {i}" for i in range(MAX_HEADER_LINES - 12)])
        self.assertEqual(len(Message.parse(fits).headers.items()), base + MAX_HEADER_LINES - 12)
        over = with_headers([f"X-Filler-{i}: {i}" for i in range(MAX_HEADER_LINES - 11)])
        with self.assertRaises(SIPParseError) as caught:
            Message.parse(over)
        self.assertIn(f"more than {MAX_HEADER_LINES} header lines", str(caught.exception))
        self.assertEqual(caught.exception.status_code, 400)

    def test_via_values_bounded_over_lines_and_commas(self) -> None:
        """INVITE has 3 Via values; 61 more fit, 62 more are refused (however written)."""
        def vias(n: int) -> list[str]:
            return [f"Via: SIP/2.0/TLS h{i}.example.com;branch=z9hG4bK{i}" for i in range(n)]

        self.assertEqual(len(Message.parse(with_headers(vias(61))).via), MAX_ROUTING_VALUES)
        with self.assertRaises(SIPParseError) as caught:
            Message.parse(with_headers(vias(62)))
        self.assertIn(f"more than {MAX_ROUTING_VALUES} Via values", str(caught.exception))
        one_line = "Via: " + ", ".join(v[5:] for v in vias(62))
        self.assertRaises(SIPParseError, Message.parse, with_headers([one_line]))
        self.assertEqual(len(Message.parse(with_headers([one_line[: one_line.rfind(",")]])).via),
                         MAX_ROUTING_VALUES)

    def test_top_via_line_with_many_values(self) -> None:
        many = ", ".join(f"SIP/2.0/TLS h{i};branch=z9hG4bK{i}" for i in range(70))
        data = INVITE.replace(b"Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKaaa;rport",
                              f"Via: {many}".encode())
        self.assertRaises(SIPParseError, Message.parse, data)

    def test_route_and_record_route_bounded(self) -> None:
        for name in ("Route", "Record-Route"):
            fits = [f"{name}: " + ", ".join(f"<sip:p{i}.example.com;lr>" for i in range(64))]
            self.assertEqual(len(Message.parse(with_headers(fits)).headers.getlist(name)), 64)
            over = [*fits, f"{name}: <sip:last.example.com;lr>"]
            with self.assertRaises(SIPParseError) as caught:
                Message.parse(with_headers(over))
            self.assertIn(f"more than 64 {name} values", str(caught.exception))

    def test_quoted_commas_are_not_values(self) -> None:
        """Commas inside quoted display names do not count: 40 values with 80 commas fit."""
        line = "Record-Route: " + ", ".join(
            f'"Proxy, number {i}" <sip:p{i}.example.com;lr>' for i in range(40)
        )
        parsed = Message.parse(with_headers([line]))
        self.assertEqual(len(parsed.record_route), 40)

    def test_responses_bounded_too(self) -> None:
        response = bytes(Response.from_request(Message.parse(INVITE), 200))
        over = [f"Record-Route: <sip:p{i}.example.com;lr>" for i in range(65)]
        self.assertRaises(SIPParseError, Message.parse, with_headers(over, response))
        self.assertRaises(SIPParseError, Message.parse, with_headers(over[:64] * 4, response))


class BuildTests(SynchronousTestCase):
    def test_bytes_sets_content_length(self) -> None:
        """RFC 3261 §20.14 / §18.3: bytes() always writes len(body) as Content-Length."""
        r = Request("MESSAGE", "sip:a@b", {"Content-Length": "999", "Call-ID": "x"}, b"hello")
        data = bytes(r)
        self.assertIn(b"Content-Length: 5\r\n", data)
        self.assertNotIn(b"999", data)
        self.assertTrue(data.endswith(b"\r\n\r\nhello"))
        self.assertIn(b"Content-Length: 0\r\n", bytes(Request("OPTIONS", "sip:a@b")))

    def test_constructor_validation(self) -> None:
        self.assertRaises(ValueError, Request, "IN VITE", "sip:a@b")
        self.assertRaises(ValueError, Request, "INVITE", "sip:a b")
        self.assertRaises(ValueError, Response, 99)
        self.assertRaises(ValueError, Response, 200, "OK\r\nVia: x")
        self.assertEqual(Response(486).phrase, "Busy Here")
        self.assertEqual(Response(299).phrase, "OK")

    def test_from_request_refuses_a_to_tag_with_a_line_break(self) -> None:
        """RFC 3261 §7.3: a To tag carrying CR/LF would inject a header line; the copied
        fields skip the per-value check (issue 16), the tag we add never does."""
        request = Message.parse(INVITE)
        assert isinstance(request, Request)
        for tag in ("t\r\nX-Injected: 1", "t\nX: 1", "t\r"):
            with self.subTest(tag=tag), self.assertRaises(ValueError):
                Response.from_request(request, 200, to_tag=tag)

    def test_from_request(self) -> None:
        """RFC 3261 §8.2.6.2: Via (all, in order), From, Call-ID, CSeq copied once; To gets
        our tag."""
        request = Message.parse(INVITE)
        assert isinstance(request, Request)
        response = Response.from_request(
            request, 200, headers={"Contact": "<sip:bob@h>", "CSeq": "1 INVITE"},
            body=b"x", to_tag="t1",
        )  # fmt: skip
        self.assertEqual(response.phrase, "OK")
        self.assertEqual(response.headers.getlist("Via"), request.headers.getlist("Via"))
        self.assertEqual(len(response.headers._values("via")), 2)
        self.assertEqual(response.headers["From"], request.headers["From"])
        self.assertEqual(response.headers["To"], "Bob <sip:bob@example.com>;tag=t1")
        self.assertEqual(response.headers.getlist("CSeq"), ["1 INVITE"])
        self.assertEqual(response.headers["Call-ID"], "call-1@example.com")
        parsed = Message.parse(bytes(response))
        self.assertEqual(
            (parsed.remote_tag, parsed.local_tag, parsed.branch), ("t1", "abc", "z9hG4bKaaa")
        )
        self.assertEqual(parsed.body, b"x")

    def test_from_request_for_a_malformed_request(self) -> None:
        """A 400 can be built for a request whose To/From grammar is broken (RFC 4475
        §3.1.2.6): the values are copied as received."""
        data = INVITE.replace(b"t: Bob <sip:bob@example.com>", b't: "Bob <sip:bob@example.com>')
        request = Message.parse(data)
        self.assertRaises(SIPParseError, request.validate)
        response = Response.from_request(request, 400, to_tag="x")
        self.assertEqual(response.headers["To"], '"Bob <sip:bob@example.com>;tag=x')
        self.assertEqual(response.headers["Call-ID"], "call-1@example.com")

    def test_from_request_keeps_existing_to_tag(self) -> None:
        """RFC 3261 §8.2.6.2: a To tag already present is kept."""
        data = INVITE.replace(b"t: Bob <sip:bob@example.com>", b"t: <sip:b@c>;tag=old")
        request = Message.parse(data)
        response = Response.from_request(request, 487, to_tag="new")
        self.assertEqual(response.headers["To"], "<sip:b@c>;tag=old")
        self.assertEqual(Response.from_request(request, 100).phrase, "Trying")


_token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
                 min_size=1, max_size=12)  # fmt: skip
_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters=","),
                 min_size=1, max_size=30)  # fmt: skip
_names = st.sampled_from(["Subject", "X-Thing", "User-Agent", "Allow"])
_extra = st.lists(st.tuples(_names, _value), max_size=5)
_phrase = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


class RoundTripTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(
        method=_token, user=_token, tag=_token, branch=_token, call_id=_token,
        number=st.integers(0, 2**31 - 1), extra=_extra, body=st.binary(max_size=64),
        code=st.integers(100, 699), phrase=_phrase,
    )  # fmt: skip
    def test_round_trip(  # type: ignore[no-untyped-def]
        self, method, user, tag, branch, call_id, number, extra, body, code, phrase
    ) -> None:
        """Request/Response built from parts -> bytes -> parse gives the same message."""
        headers = Headers([
            ("Via", f"SIP/2.0/TLS host.example.com:5061;branch=z9hG4bK{branch}"),
            ("From", f'"{user}" <sip:{user}@example.com>;tag={tag}'),
            ("To", f"<sip:{user}@example.org>"),
            ("Call-ID", call_id), ("CSeq", f"{number} {method}"), *extra,
        ])  # fmt: skip
        request = Request(method, f"sip:{user}@example.com", headers, body)
        parsed = Message.parse(bytes(request), strict=True)
        assert isinstance(parsed, Request)
        self.assertEqual((parsed.method, parsed.uri, parsed.body), (method, request.uri, body))
        self.assertEqual(parsed.cseq, (number, method))
        self.assertEqual((parsed.branch, parsed.local_tag, parsed.call_id),
                         (f"z9hG4bK{branch}", tag, call_id))  # fmt: skip
        self.assertEqual(parsed.from_.display_name, user)
        without_length = [(n, v) for n, v in parsed.headers.items() if n != "Content-Length"]
        self.assertEqual(without_length, headers.items())
        response = Response.from_request(parsed, code, phrase, to_tag=tag, body=body)
        again = Message.parse(bytes(response), strict=True)
        assert isinstance(again, Response)
        self.assertEqual((again.status_code, again.phrase, again.body), (code, phrase, body))
        self.assertEqual((again.remote_tag, again.branch), (tag, f"z9hG4bK{branch}"))
