"""Tests for voiptwisted.sip.headers."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.sip.headers import (
    Headers,
    NameAddr,
    SIPParseError,
    Via,
    canonical_name,
    find_branch,
    find_tag,
    name_addr_tag,
    parse_params,
    split_commas,
    via_branch,
)
from voiptwisted.sip.uri import NetworkAddress


class HeadersTests(SynchronousTestCase):
    def test_compact_forms_expanded(self) -> None:
        """RFC 3261 §7.3.3 (and extensions): compact names map to the long names."""
        expected = {
            "i": "Call-ID", "m": "Contact", "f": "From", "t": "To", "v": "Via",
            "l": "Content-Length", "c": "Content-Type", "k": "Supported", "s": "Subject",
            "e": "Content-Encoding", "o": "Event", "u": "Allow-Events", "r": "Refer-To",
            "b": "Referred-By", "x": "Session-Expires", "y": "Identity",
        }  # fmt: skip
        for short, long in expected.items():
            h = Headers([(short, "value")])
            self.assertEqual(h.items(), [(long, "value")])
            self.assertEqual(h[long.upper()], "value")
            self.assertEqual(h[short.upper()], "value")

    def test_case_insensitive_canonical(self) -> None:
        """RFC 3261 §7.3.1: names are case-insensitive; output uses canonical case."""
        h = Headers({"call-id": "a", "cseq": "1 INVITE", "www-authenticate": "Digest x=1"})
        self.assertEqual([n for n, _ in h.items()], ["Call-ID", "CSeq", "WWW-Authenticate"])
        self.assertEqual(h["CALL-ID"], "a")
        self.assertIn("Call-Id", h)
        self.assertNotIn("To", h)
        self.assertNotIn(42, h)
        self.assertEqual(canonical_name("x-custom-thing"), "x-custom-thing")

    def test_multimap_operations(self) -> None:
        h = Headers()
        h.add("Via", "SIP/2.0/TLS a;branch=z9hG4bK1")
        h.add("To", "<sip:b@c>")
        h.add("Via", "SIP/2.0/TLS b;branch=z9hG4bK2")
        self.assertEqual(len(h), 3)
        self.assertEqual(h["Via"], "SIP/2.0/TLS a;branch=z9hG4bK1")
        self.assertEqual(h.getlist("v"), ["SIP/2.0/TLS a;branch=z9hG4bK1",
                                          "SIP/2.0/TLS b;branch=z9hG4bK2"])  # fmt: skip
        h["Via"] = "SIP/2.0/UDP c"
        self.assertEqual(h.items(), [("Via", "SIP/2.0/UDP c"), ("To", "<sip:b@c>")])
        self.assertEqual(h.setdefault("To", "x"), "<sip:b@c>")
        self.assertEqual(h.setdefault("From", "<sip:a@c>"), "<sip:a@c>")
        del h["via"]
        self.assertEqual(list(h), ["To", "From"])
        self.assertRaises(KeyError, h.__getitem__, "Via")
        self.assertRaises(KeyError, h.__delitem__, "Via")
        self.assertIsNone(h.get("Via"))
        self.assertEqual(h.get("Via", "d"), "d")
        self.assertEqual(h.pop("To"), "<sip:b@c>")
        self.assertEqual(Headers(h), h)
        self.assertEqual(h.copy().items(), h.items())

    def test_getlist_splits_outside_quotes_and_brackets(self) -> None:
        """RFC 3261 §7.3.1: comma lists split, but not inside "..." or <...>."""
        h = Headers([("Contact", '"Doe, John" <sip:j@x;a=1,2>;q=0.5, <sip:k@y>'),
                     ("Allow", "INVITE, ACK,BYE"),
                     ("WWW-Authenticate", 'Digest realm="a", nonce="b"')])  # fmt: skip
        self.assertEqual(h.getlist("m"), ['"Doe, John" <sip:j@x;a=1,2>;q=0.5', "<sip:k@y>"])
        self.assertEqual(h.getlist("Allow"), ["INVITE", "ACK", "BYE"])
        self.assertEqual(h.getlist("WWW-Authenticate"), ['Digest realm="a", nonce="b"'])

    def test_split_commas(self) -> None:
        self.assertEqual(split_commas('a, "b,\\"c", <d,e>'), ["a", '"b,\\"c"', "<d,e>"])
        self.assertEqual(split_commas("a,,b"), ["a", "", "b"])
        self.assertRaises(SIPParseError, split_commas, '"open, quote')
        self.assertRaises(SIPParseError, split_commas, "<open, bracket")

    def test_invalid_names_and_injection(self) -> None:
        """Header names are tokens (RFC 3261 §25.1); values never carry CR/LF."""
        self.assertRaises(SIPParseError, Headers, [("Bad Name", "v")])
        self.assertRaises(SIPParseError, Headers, [("", "v")])
        h = Headers()
        self.assertRaises(ValueError, h.add, "Subject", "x\r\nVia: evil")
        self.assertRaises(ValueError, h.__setitem__, "Subject", "x\nevil")


class ParamsTests(SynchronousTestCase):
    def test_parse_params(self) -> None:
        """RFC 3261 §25.1 generic-param with LWS; names lower-cased (§7.3.1)."""
        self.assertEqual(parse_params(";a=b;c"), {"a": "b", "c": None})
        self.assertEqual(parse_params(' ; Tag = 1x ;  q=0.5;x="a;b"'),
                         {"tag": "1x", "q": "0.5", "x": '"a;b"'})  # fmt: skip
        self.assertEqual(parse_params(""), {})
        self.assertEqual(parse_params(";received=2001:db8::1"), {"received": "2001:db8::1"})

    def test_bad_params(self) -> None:
        for bad in (";;", ";a=", "a=b", ";a b=c", ';a="unterminated', ";a=b c", ";a=<x>"):
            with self.subTest(bad=bad):
                self.assertRaises(SIPParseError, parse_params, bad)


class NameAddrTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """RFC 3261 §20.10: name-addr and addr-spec forms."""
        na = NameAddr.parse('"Alice \\"A\\"" <sip:alice@example.com;transport=tls>;tag=1')
        self.assertEqual(na.display_name, 'Alice "A"')
        self.assertEqual(na.uri, "sip:alice@example.com;transport=tls")
        self.assertEqual(na.tag, "1")
        na = NameAddr.parse("Alice  Smith<sip:a@b>")
        self.assertEqual(na.display_name, "Alice Smith")
        na = NameAddr.parse("sip:a@b;tag=9;expires=30")
        self.assertEqual((na.uri, na.display_name), ("sip:a@b", None))
        self.assertEqual(na.params, {"tag": "9", "expires": "30"})
        self.assertEqual(na.expires, 30)

    def test_str_round_trip(self) -> None:
        for text in ('"A \\"B\\"" <sip:a@b>;tag=1', "<sip:a@b;lr>", '"" <sip:x@y>;q=1'):
            na = NameAddr.parse(text)
            self.assertEqual(NameAddr.parse(str(na)), na)
        self.assertEqual(str(NameAddr("sip:a@b", "Bob", {"tag": "x"})), '"Bob" <sip:a@b>;tag=x')

    def test_rejects(self) -> None:
        """RFC 3261 §20.10: URIs with '?' or ',' must be in <>; RFC 4475 §3.1.2.6/14/15."""
        for bad in ("sip:a@b?Route=x", '"open <sip:a@b>', "< sip:a@b >", "Bell, A <sip:a@b>",
                    "<sip:a@b", "noscheme", "<sip:a@b>;;tag=1", '"x" sip:a@b'):  # fmt: skip
            with self.subTest(bad=bad):
                self.assertRaises(SIPParseError, NameAddr.parse, bad)
                self.assertRaises(SIPParseError, name_addr_tag, bad)

    def test_expires_clamped(self) -> None:
        """RFC 3261 §10.2.1.1 bound: expires above 2**32-1 is clamped."""
        self.assertEqual(NameAddr.parse("<sip:a@b>;expires=280297596632815").expires, 2**32 - 1)
        self.assertRaises(SIPParseError, lambda: NameAddr.parse("<sip:a@b>;expires=x").expires)

    def test_fast_tag_matches_full_parse(self) -> None:
        """find_tag (lazy) and name_addr_tag (validating) agree with NameAddr.parse."""
        for text in ('"a>b;tag=no" <sip:x;tag=no>;tag=yes', "<sip:x>; TAG = yes",
                     "sip:x;tag=yes", "<sip:x>", '"q" <sip:x>;other=1;tag=yes',
                     "<sip:x;tag=no>;q=1", "<sip:x>;q=1;tag=a.b-c;lr", "B <sip:x>;tag=9;q=1",
                     "<sip:x>;Tag=up", "<sip:x>;lr", '"a<b>;tag=no" <sip:x>;tag=z;q=1',
                     '"a\\"b;tag=no" <sip:x>;tag=esc', '<sip:x>;p="q";tag=after',
                     '"n" <sip:x;tag=no>'):  # fmt: skip
            with self.subTest(text=text):
                expected = NameAddr.parse(text).tag
                self.assertEqual(find_tag(text), expected)
                self.assertEqual(name_addr_tag(text), expected)

    def test_fast_tag_and_branch_ignore_surrounding_lws(self) -> None:
        """Message.parse hands find_tag/find_branch values with their LWS (RFC 3261 §7.3.1
        allows it around a value): the result is the one for the stripped value."""
        tags = ('"a>b;tag=no" <sip:x;tag=no>;tag=yes', "<sip:x>; TAG = yes", "sip:x;tag=yes",
                "<sip:x>", "<sip:x>;TAG=first;tag=second", "<sip:x>;tag=a b",
                "<sip:x>;tag=")  # fmt: skip
        vias = ("SIP/2.0/TLS h;branch=z9hG4bK1", "SIP/2.0/TLS h;BRANCH=first;branch=second",
                "SIP/2.0/TLS h; branch = z9hG4bK2", "SIP/2.0/TLS h;rport",
                "SIP/2.0/TLS h;branch=")  # fmt: skip
        for find, values in ((find_tag, tags), (find_branch, vias)):
            for text in values:
                for padded in (f" {text}", f"{text} \t", f"\t {text}  "):
                    with self.subTest(find=find.__name__, padded=padded):
                        self.assertEqual(find(padded), find(text))
        self.assertEqual(find_tag("<sip:x>;TAG=first;tag=second  "), "second")
        self.assertEqual(find_branch("SIP/2.0/TLS h;BRANCH=first;branch=second "), "second")


class ViaTests(SynchronousTestCase):
    def test_public_address(self) -> None:
        """RFC 3581 §4: received and rport give the address the next hop saw; a part it
        did not report keeps the address learned before, else our sent-by."""
        via = Via.parse("SIP/2.0/TLS 10.0.0.5:40000;branch=z9hG4bKx;received=192.0.2.7;rport=9")
        self.assertEqual(via.public_address(), NetworkAddress.parse("192.0.2.7:9"))
        known = NetworkAddress.parse("198.51.100.1:7000")
        rport_only = Via.parse("SIP/2.0/TLS 10.0.0.5:40000;branch=z9hG4bKx;rport=41234")
        self.assertEqual(
            rport_only.public_address(known), NetworkAddress.parse("198.51.100.1:41234")
        )
        self.assertEqual(rport_only.public_address(), NetworkAddress.parse("10.0.0.5:41234"))
        v6 = Via.parse("SIP/2.0/TLS [2001:db8::5];branch=z9hG4bKx;received=2001:db8::7;rport")
        self.assertEqual(v6.public_address(None, 5061), NetworkAddress.parse("[2001:db8::7]:5061"))
        self.assertIsNone(Via.parse("SIP/2.0/TLS 10.0.0.5;branch=z9hG4bKx;rport").public_address())
        bad = Via.parse("SIP/2.0/TLS 10.0.0.5;branch=z9hG4bKx;received=not/an/address")
        self.assertIsNone(bad.public_address())

    def test_parse(self) -> None:
        """RFC 3261 §20.42, RFC 3581 rport."""
        via = Via.parse("SIP/2.0/tls 192.0.2.1:5061;branch=z9hG4bKx;rport=40000;received=1.2.3.4")
        self.assertEqual(via.protocol, "SIP/2.0/TLS")
        self.assertEqual(via.transport, "TLS")
        self.assertEqual((via.host, via.port), ("192.0.2.1", 5061))
        self.assertEqual((via.branch, via.received, via.rport), ("z9hG4bKx", "1.2.3.4", 40000))
        self.assertIs(Via.parse("SIP/2.0/TCP h;rport").rport, True)
        self.assertIsNone(Via.parse("SIP/2.0/TCP h").rport)
        v6 = Via.parse("SIP / 2.0 / UDP [2001:db8::1] : 5060 ; branch = z9hG4bKy")
        self.assertEqual((v6.host, v6.port, v6.branch), ("[2001:db8::1]", 5060, "z9hG4bKy"))

    def test_str_round_trip(self) -> None:
        for text in ("SIP/2.0/TLS a.example.com:5061;branch=z9hG4bK1;rport",
                     "SIP/2.0/UDP [::1];received=::1"):  # fmt: skip
            self.assertEqual(str(Via.parse(text)), text)
            self.assertEqual(Via.parse(str(Via.parse(text))), Via.parse(text))

    def test_rejects(self) -> None:
        bad_values = ("SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host;;",
                      "SIP/2.0/UDP h:99999", "SIP/2.0/UDP h;rport=x", "SIP/2.0/UDP bad host",
                      "HTTP/1.1/TCP h")  # fmt: skip
        for bad in bad_values:
            with self.subTest(bad=bad):
                self.assertRaises(SIPParseError, Via.parse, bad)
                self.assertRaises(SIPParseError, via_branch, bad)

    def test_other_version_is_505(self) -> None:
        """RFC 3261 §8.2.2 / RFC 4475 §3.1.2.16: another SIP version means 505."""
        with self.assertRaises(SIPParseError) as ctx:
            Via.parse("SIP/7.0/UDP host")
        self.assertEqual(ctx.exception.status_code, 505)
