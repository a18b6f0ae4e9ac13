"""The RFC 4475 torture messages against voiptwisted.sip.message.

Valid messages (RFC 4475 §3.1.1, §3.2, §3.3) parse, with their fields checked.
Invalid ones (§3.1.2) raise SIPParseError, either from ``Message.parse`` itself
or, for errors inside name-addr/Via values that the parser checks lazily, from
``Message.parse(data, strict=True)``; the few that RFC 4475 lets a tolerant
element accept are pinned as accepted with the section that allows it.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.sip.framing import StreamFramer
from voiptwisted.sip.message import Message, Request, Response, SIPParseError

DATA = Path(__file__).parent / "data" / "rfc4475"


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


VALID = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
    "transports", "mpart01", "unreason", "noreason",
    # §3.2 / §3.3: syntactically valid, rejected (if at all) by higher layers.
    "badbranch", "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01", "bcast",
    "zeromf", "cparam01", "cparam02", "regescrt", "sdp01", "inv2543",
]  # fmt: skip

# Rejected by Message.parse itself, with the RFC 4475 section.
INVALID_EAGER = {
    "clerr": "3.1.2.2",
    "ncl": "3.1.2.3",
    "scalar02": "3.1.2.4",
    "scalarlg": "3.1.2.5",
    "ltgtruri": "3.1.2.7",
    "lwsruri": "3.1.2.8",
    "lwsstart": "3.1.2.9",
    "trws": "3.1.2.10",
    "escruri": "3.1.2.11",
    "baddn": "3.1.2.15",
    "badvers": "3.1.2.16",
    "mismatch01": "3.1.2.17",
    "mismatch02": "3.1.2.18",
    "bigcode": "3.1.2.19",
    "insuf": "3.2.2",
    "multi01": "3.2.9",
    "mcl01": "3.2.10",
}
# The fault is inside a From/To/Via/Contact value: found on access or with strict=True.
INVALID_LAZY = {
    "badinv01": "3.1.2.1",
    "quotbal": "3.1.2.6",
    "badaspec": "3.1.2.14",
}


class CorpusTests(SynchronousTestCase):
    def test_all_49_messages_are_classified(self) -> None:
        """Every file of RFC 4475 Appendix A is covered by exactly one list here."""
        names = {p.stem for p in DATA.glob("*.dat")}
        self.assertEqual(len(names), 49)
        classified = (
            set(VALID) | set(INVALID_EAGER) | set(INVALID_LAZY) | {"baddate", "regbadct"}
        )
        self.assertEqual(names, classified)

    def test_valid_messages_parse_strictly(self) -> None:
        """RFC 4475 §3.1.1: every valid message parses, including full validation."""
        for name in VALID:
            with self.subTest(name=name):
                Message.parse(load(name), strict=True)

    def test_invalid_messages_raise(self) -> None:
        """RFC 4475 §3.1.2: invalid messages raise SIPParseError from Message.parse."""
        for name, section in INVALID_EAGER.items():
            with self.subTest(name=name, section=section):
                self.assertRaises(SIPParseError, Message.parse, load(name))

    def test_invalid_values_raise_when_validated(self) -> None:
        """RFC 4475 §3.1.2.1/6/14: bad name-addr/Via values raise with strict=True."""
        for name, section in INVALID_LAZY.items():
            with self.subTest(name=name, section=section):
                self.assertRaises(SIPParseError, Message.parse, load(name), strict=True)

    def test_invalid_messages_never_crash_the_framer(self) -> None:
        """Every torture message, fed byte by byte, frames or raises FramingError only."""
        for path in sorted(DATA.glob("*.dat")):
            framer = StreamFramer(eager_pong=False)
            data = path.read_bytes()
            try:
                for i in range(len(data)):
                    framer.feed(data[i : i + 1])
            except SIPParseError:
                pass


class ValidMessageTests(SynchronousTestCase):
    def test_wsinv(self) -> None:
        """RFC 4475 §3.1.1.1: folding, LWS around ':' '/' ';' '=', compact forms."""
        m = Message.parse(load("wsinv"))
        assert isinstance(m, Request)
        self.assertEqual(m.method, "INVITE")
        self.assertEqual(m.uri, "sip:vivekg@chair-dnrc.example.com;unknownparam")
        self.assertEqual(m.remote_tag, "1918181833n")
        self.assertEqual(m.local_tag, "98asjd8")
        self.assertEqual(m.from_.display_name, 'J Rosenberg \\"')
        self.assertEqual(m.max_forwards, 68)
        self.assertEqual(m.call_id, "wsinv.ndaksdj@192.0.2.1")
        self.assertEqual(m.cseq, (9, "INVITE"))
        self.assertEqual(len(m.body), 150)
        self.assertEqual([v.host for v in m.via], ["192.0.2.2", "spindle.example.com",
                                                   "192.168.255.111"])  # fmt: skip
        self.assertEqual([v.branch for v in m.via], ["390skdjuw", "z9hG4bK9ikj8",
                                                     "z9hG4bK30239"])  # fmt: skip
        self.assertEqual(m.via[1].transport, "TCP")
        self.assertEqual(m.branch, "390skdjuw")
        self.assertEqual(m.headers["Subject"], "")
        self.assertEqual(
            m.headers["NewFangledHeader"], "newfangled value continued newfangled value"
        )
        self.assertEqual(m.headers["UnknownHeaderWithUnusualValue"], ";;,,;;,;")
        (contact,) = m.contact
        self.assertEqual(contact.display_name, 'Quoted string ""')
        self.assertEqual(contact.params, {"newparam": "newvalue", "secondparam": None,
                                          "q": "0.33"})  # fmt: skip
        (route,) = m.route
        self.assertEqual(
            route.uri, "sip:services.example.com;lr;unknownwith=value;unknown-no-value"
        )

    def test_intmeth(self) -> None:
        """RFC 4475 §3.1.1.2: unusual token characters in method, headers, tags."""
        m = Message.parse(load("intmeth"), strict=True)
        method = "!interesting-Method0123456789_*+`.%indeed'~"
        self.assertEqual(m.method, method)
        self.assertEqual(m.cseq, (139122385, method))
        self.assertEqual(m.branch, "z9hG4bK-.!%66*_+`'~")
        self.assertEqual(m.local_tag, "_token~1'+`*%!-.")
        self.assertEqual(m.from_.display_name, "token1~` token2'+_ token3*%!.-")
        self.assertEqual(m.to.display_name, "BEL:\x07 NUL:\x00 DEL:\x7f")
        self.assertEqual(m.call_id, "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
        self.assertEqual(m.headers["extensionHeader-!.%*+_`'~"], "\ufeff大停電")
        self.assertEqual(m.body, b"")

    def test_esc01(self) -> None:
        """RFC 4475 §3.1.1.3: escapes are kept verbatim in URIs."""
        m = Message.parse(load("esc01"), strict=True)
        self.assertEqual(m.uri, "sip:sips%3Auser%40example.com@example.net")
        self.assertEqual(m.to.uri, "sip:%75se%72@example.com")
        self.assertEqual(
            m.contact[0].uri, "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31"
        )
        self.assertEqual(len(m.body), 150)

    def test_escnull(self) -> None:
        """RFC 4475 §3.1.1.4: %00 in URIs."""
        m = Message.parse(load("escnull"), strict=True)
        self.assertEqual(m.method, "REGISTER")
        self.assertEqual(
            [c.uri for c in m.contact],
            ["sip:%00@host5.example.com", "sip:%00%00@host5.example.com"],
        )

    def test_esc02(self) -> None:
        """RFC 4475 §3.1.1.5: % in a method is a token character, not an escape."""
        m = Message.parse(load("esc02"), strict=True)
        self.assertEqual(m.method, "RE%47IST%45R")
        self.assertEqual(m.cseq, (29344, "RE%47IST%45R"))
        self.assertEqual(m.to.display_name, "%Z%45")

    def test_lwsdisp(self) -> None:
        """RFC 4475 §3.1.1.6: no LWS between display name and '<'."""
        m = Message.parse(load("lwsdisp"), strict=True)
        self.assertEqual(m.from_.display_name, "caller")
        self.assertEqual(m.from_.uri, "sip:caller@example.com")
        self.assertEqual(m.local_tag, "323")

    def test_longreq(self) -> None:
        """RFC 4475 §3.1.1.7: long values, many Via, compact From."""
        m = Message.parse(load("longreq"), strict=True)
        self.assertEqual(len(m.via), 34)
        self.assertTrue(m.local_tag.startswith("12982982982982982982"))
        self.assertIsNone(m.remote_tag)
        self.assertEqual(len(m.body), 150)
        self.assertTrue(m.to.display_name.startswith("I have a user name of extreme"))

    def test_dblreq(self) -> None:
        """RFC 4475 §3.1.1.8 / RFC 3261 §18.3: octets after Content-Length are ignored."""
        m = Message.parse(load("dblreq"), strict=True)
        self.assertEqual(m.method, "REGISTER")
        self.assertEqual(m.body, b"")
        self.assertEqual(m.branch, "z9hG4bKkdjuw23492")

    def test_semiuri(self) -> None:
        """RFC 4475 §3.1.1.9: ';' in the user part of the Request-URI."""
        m = Message.parse(load("semiuri"), strict=True)
        self.assertEqual(m.uri, "sip:user;par=u%40example.net@example.com")

    def test_transports(self) -> None:
        """RFC 4475 §3.1.1.10: unknown transports in Via."""
        m = Message.parse(load("transports"), strict=True)
        self.assertEqual([v.transport for v in m.via], ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"])

    def test_mpart01(self) -> None:
        """RFC 4475 §3.1.1.11: a multipart body is kept byte for byte."""
        data = load("mpart01")
        m = Message.parse(data, strict=True)
        self.assertEqual(m.method, "MESSAGE")
        self.assertEqual(len(m.body), 553)
        self.assertTrue(data.endswith(m.body))

    def test_unreason(self) -> None:
        """RFC 4475 §3.1.1.12: a UTF-8 reason phrase."""
        m = Message.parse(load("unreason"), strict=True)
        assert isinstance(m, Response)
        self.assertEqual(m.status_code, 200)
        self.assertEqual(m.phrase, "= 2**3 * 5**2 но сто девяносто девять - простое")

    def test_noreason(self) -> None:
        """RFC 4475 §3.1.1.13: an empty reason phrase."""
        m = Message.parse(load("noreason"), strict=True)
        self.assertEqual((m.status_code, m.phrase), (100, ""))

    def test_badbranch(self) -> None:
        """RFC 4475 §3.2.1: branch is only the magic cookie; the parser must not break."""
        self.assertEqual(Message.parse(load("badbranch")).branch, "z9hG4bK")

    def test_unknown_schemes(self) -> None:
        """RFC 4475 §3.2.3-3.2.5: unknown URI schemes parse (rejected with 416 above us)."""
        m = Message.parse(load("unkscm"))
        self.assertEqual(m.uri, "nobodyKnowsThisScheme:totallyopaquecontent")
        self.assertEqual(Message.parse(load("novelsc")).uri, "soap.beep://192.0.2.103:3002")
        m = Message.parse(load("unksm2"), strict=True)
        self.assertEqual(m.to.uri, "isbn:2983792873")
        self.assertEqual(m.from_.uri, "http://www.example.com")

    def test_bext01(self) -> None:
        """RFC 4475 §3.2.6: Require/Proxy-Require values are available as lists."""
        m = Message.parse(load("bext01"))
        self.assertEqual(
            m.headers.getlist("Require"), ["nothingSupportsThis", "nothingSupportsThisEither"]
        )
        self.assertEqual(
            m.headers.getlist("Proxy-Require"),
            ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"],
        )

    def test_bcast_and_zeromf(self) -> None:
        """RFC 4475 §3.2.11, §3.2.12: broadcast Via, Max-Forwards 0."""
        m = Message.parse(load("bcast"), strict=True)
        self.assertEqual(m.via[1].host, "255.255.255.255")
        self.assertEqual(Message.parse(load("zeromf")).max_forwards, 0)

    def test_cparam(self) -> None:
        """RFC 4475 §3.2.13/14: after a bare addr-spec ';param' is a header param
        (RFC 3261 §20.10); inside <...> it belongs to the URI."""
        m = Message.parse(load("cparam01"), strict=True)
        self.assertEqual(m.contact[0].uri, "sip:+19725552222@gw1.example.net")
        self.assertEqual(m.contact[0].params, {"unknownparam": None})
        m2 = Message.parse(load("cparam02"), strict=True)
        self.assertEqual(m2.contact[0].uri, "sip:+19725552222@gw1.example.net;unknownparam")
        self.assertEqual(m2.contact[0].params, {})

    def test_regescrt(self) -> None:
        """RFC 4475 §3.2.15: escaped headers are fine inside <...>."""
        m = Message.parse(load("regescrt"), strict=True)
        self.assertEqual(m.contact[0].uri, "sip:user@example.com?Route=%3Csip:sip.example.com%3E")

    def test_inv2543(self) -> None:
        """RFC 4475 §3.3.1: RFC 2543 syntax (no branch, no From tag, no Content-Length)."""
        m = Message.parse(load("inv2543"), strict=True)
        self.assertIsNone(m.branch)
        self.assertIsNone(m.local_tag)
        self.assertEqual(len(m.body), len(load("inv2543").split(b"\r\n\r\n", 1)[1]))


class InvalidMessageTests(SynchronousTestCase):
    def test_badvers_is_505(self) -> None:
        """RFC 4475 §3.1.2.16: an unknown SIP version maps to 505."""
        with self.assertRaises(SIPParseError) as ctx:
            Message.parse(load("badvers"))
        self.assertEqual(ctx.exception.status_code, 505)

    def test_baddn_display_name(self) -> None:
        """RFC 4475 §3.1.2.15: unquoted non-token display names are rejected (also once
        the missing final CRLF of the archived file is restored)."""
        data = load("baddn") + b"\r\n\r\n"
        self.assertRaises(SIPParseError, Message.parse, data, strict=True)

    def test_lazy_faults_surface_on_access(self) -> None:
        """RFC 4475 §3.1.2.6: the bad To is reported when it is read."""
        m = Message.parse(load("quotbal"))
        with self.assertRaises(SIPParseError):
            m.to  # noqa: B018

    def test_baddate_tolerated(self) -> None:
        """RFC 4475 §3.1.2.12: an element that does not use Date may ignore a bad one."""
        m = Message.parse(load("baddate"), strict=True)
        self.assertEqual(m.headers["Date"], "Fri, 01 Jan 2010 16:00:00 EST")

    def test_regbadct_rejected_when_contact_is_read(self) -> None:
        """RFC 4475 §3.1.2.13: a URI with escaped headers outside <> is rejected when
        the Contact is read (400); RFC 4475 allows a liberal element to accept the
        message otherwise, which is what the lazy parse does."""
        m = Message.parse(load("regbadct"))
        self.assertEqual(m.method, "REGISTER")
        with self.assertRaises(SIPParseError):
            m.contact  # noqa: B018
        self.assertRaises(SIPParseError, Message.parse, load("regbadct"), strict=True)
