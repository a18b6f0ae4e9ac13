"""Hostile input costs time linear in its size, and only documented errors (issue 14).

The review found parsers quadratic or cubic in crafted runs: unfolding (finding 1),
the trace redaction (finding 2), caller-ID display names, name-addr, Via and
parameters (finding 3).  Each shape of ``tests.sip.hostile`` is grown to 64 KiB and
put through the work a UA does on an inbound INVITE; its CPU time is compared with
that of an ordinary INVITE padded to the same size, measured in the same test (no
wall-clock threshold).  The bugs cost 1,000x and more; linear code stays near 1x,
so the bound of 20x leaves a wide margin for a loaded machine.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from tests.sip.hostile import SHAPES, invite, normal, receive
from voiptwisted.sip.headers import (
    MAX_LIST_VALUES,
    MAX_PARAMS,
    NameAddr,
    SIPParseError,
    Via,
    name_addr_tag,
    parse_params,
)
from voiptwisted.sip.message import Message
from voiptwisted.sip.protocol import redact
from voiptwisted.sip.uri import CallerID

SIZE = 64 * 1024
#: Most a hostile input may cost per byte, as a multiple of the padded ordinary INVITE.
MAX_RATIO = 20
REPEATS = 5


def _cpu(work: Callable[[], object]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


class LinearTimeTests(SynchronousTestCase):
    """Every shape costs at most MAX_RATIO times the ordinary INVITE of its size."""

    def assertLinear(self, *names: str) -> None:
        baseline = normal(SIZE)
        for name in names:
            data = SHAPES[name](SIZE)
            with self.subTest(shape=name):
                # Interleaved, best of several: a busy machine only ever adds time.
                ours = theirs = float("inf")
                for _ in range(REPEATS):
                    ours = min(ours, _cpu(lambda: receive(baseline)))
                    theirs = min(theirs, _cpu(lambda data=data: receive(data)))
                ratio = (theirs / len(data)) / (max(ours, 1e-6) / len(baseline))
                self.assertLessEqual(
                    ratio, MAX_RATIO, f"{name}: {ratio:.0f}x the ordinary INVITE per byte"
                )

    def test_unfolding(self) -> None:
        """Finding 1: unfolding (RFC 3261 §7.3.1) with long SP/HTAB runs once a line is folded."""
        self.assertLinear("folded SP/HTAB runs")

    def test_trace_redaction(self) -> None:
        """Finding 2: ``redact()`` (--trace-sip) over a=crypto and inline: runs."""
        self.assertLinear("a=crypto: run", "inline: run")

    def test_display_names_and_name_addr(self) -> None:
        """Finding 3: CallerID.display_name (repr, Dialog.__repr__), NameAddr and name_addr_tag."""
        self.assertLinear(
            "VT/U+0085/U+2028 display name",
            "SP/HTAB before a name-addr",
            "display-name tokens",
            "unclosed quoted display name",
        )

    def test_via_and_parameters(self) -> None:
        """Finding 3: Via and header parameters with LWS runs and ';' storms."""
        self.assertLinear(
            "SP/HTAB inside Via parameters",
            "';' storm in Via",
            "';' storm in name-addr parameters",
        )

    def test_storms(self) -> None:
        """'<' and ',' storms, a 64 KiB Expires, and SDP r= lines."""
        self.assertLinear("'<' storm", "',' storm in Contact", "Expires digits", "SDP r= lines")


class ValueLinearTimeTests(SynchronousTestCase):
    """Finding 3 at the API: each parser costs at most MAX_RATIO times per byte on a
    64 KiB hostile value what it costs on an ordinary value of the same size."""

    def assertLinear(self, parse: Callable[[str], object], ordinary: str, hostile: str) -> None:
        def cost(value: str) -> float:
            def work() -> None:
                with contextlib.suppress(SIPParseError):
                    parse(value)

            return min(_cpu(work) for _ in range(REPEATS))

        ratio = (cost(hostile) / len(hostile)) / (max(cost(ordinary), 1e-6) / len(ordinary))
        self.assertLessEqual(ratio, MAX_RATIO, f"{ratio:.0f}x an ordinary value per byte")

    def test_name_addr(self) -> None:
        ordinary = "Alice " * (SIZE // 6) + "<sip:alice@example.com>;tag=1"
        hostile = " \t" * (SIZE // 2) + "x"
        self.assertLinear(NameAddr.parse, ordinary, hostile)
        self.assertLinear(name_addr_tag, ordinary, hostile)

    def test_via_and_parameters(self) -> None:
        ordinary = "SIP/2.0/TLS h;branch=z9hG4bK" + "a" * SIZE
        self.assertLinear(Via.parse, ordinary, "SIP/2.0/TLS h;a" + " \t" * (SIZE // 2))
        self.assertLinear(parse_params, ";p=" + "v" * SIZE, ";p" + "\t " * (SIZE // 2))

    def test_display_name(self) -> None:
        ordinary = '"' + "a" * SIZE + '" <sip:alice@example.com>'
        for hostile in ("\x0b" * SIZE, "\x85\u2028" * (SIZE // 2) + "<", ' "' * (SIZE // 2)):
            with self.subTest(hostile=hostile[:4]):
                self.assertLinear(lambda v: repr(CallerID(v)), ordinary, hostile)


class FuzzTests(SynchronousTestCase):
    """Mutated hostile shapes: only SIPParseError, InvalidURI and SDPParseError escape."""

    INSERTS = [" ", "\t", "\r\n ", "\r\n\t", "\x0b", "\x85", "\u2028", '"', "\\", "<", ">",
               ";", ",", "=", ":", "inline:", "a=crypto:", ";tag=", ";rport=", "9" * 5000,
               "\xff", "%", "sip:", "@"]  # fmt: skip

    def mutate(self, rng: random.Random, data: bytes) -> bytes:
        text = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(text) + 1)
            choice = rng.randrange(4)
            if choice == 0:
                text[pos:pos] = rng.choice(self.INSERTS).encode("utf-8")
            elif choice == 1:
                start = rng.randrange(len(text) + 1)
                text[pos:pos] = text[start : start + rng.randint(1, 200)] * rng.randint(1, 20)
            elif choice == 2:
                del text[pos : pos + rng.randint(1, 30)]
            elif text:
                text[min(pos, len(text) - 1)] = rng.randrange(256)
        return bytes(text)

    def test_hostile_shapes_mutated(self) -> None:
        rng = random.Random(14)
        builders = list(SHAPES.values())
        for case in range(1500):
            data = rng.choice(builders)(rng.randint(512, 8192))
            data = self.mutate(rng, data)
            with self.subTest(case=case):
                receive(data)


class UnfoldTests(SynchronousTestCase):
    def test_continuation_lines_joined(self) -> None:
        """RFC 3261 §7.3.1: LWS around each fold (CRLF + SP/HTAB) becomes one SP; a
        continuation line of only LWS adds one SP of its own, as the regex did."""
        data = invite({"Subject: lunch": "Subject: a \t\r\n \t b\r\n \t \r\n\tc  \t\r\n d"})
        self.assertEqual(Message.parse(data).headers["Subject"], "a b  c d")


class RedactTests(SynchronousTestCase):
    """Finding 2: the linear redaction still removes every credential and key."""

    def test_every_key_of_an_a_crypto_line(self) -> None:
        """RFC 4568 §9.1: one a=crypto line may carry several keys (with MKI); the
        lazy pattern stopped after the first."""
        line = b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:KEY1|2^20|1:4;inline:KEY2|2^20|2:4"
        out = redact(invite(body=line + b"\r\n"))
        self.assertNotIn(b"KEY1", out)
        self.assertNotIn(b"KEY2", out)
        self.assertIn(b"inline:<redacted>|2^20|1:4;inline:<redacted>|2^20|2:4", out)

    def test_key_after_an_empty_inline(self) -> None:
        out = redact(b"A=CRYPTO:1 X inline: INLINE:KEY3\r\n")
        self.assertEqual(out, b"A=CRYPTO:1 X inline: INLINE:<redacted>\r\n")

    def test_folded_authorization(self) -> None:
        """RFC 3261 §7.3.1: the continuation lines of a folded Authorization are part of it."""
        data = invite(extra='Authorization: Digest username="alice",\r\n response="SECRET"')
        out = redact(data)
        self.assertNotIn(b"SECRET", out)
        self.assertIn(b"Authorization: <redacted>\r\nContent-Length:", out)


class DisplayNameTests(SynchronousTestCase):
    """Finding 3: the rewritten CallerID.display_name gives the old results."""

    def test_forms(self) -> None:
        cases = {
            '"Alice \\"A\\"" <sip:a@b>;tag=1': 'Alice "A"',
            ' \x0b"x<y"\u2028 <sip:a@b>': "x<y",
            "Bob  Smith\x85 <sip:b@c>": "Bob  Smith",
            "\x0b\u2028 <sip:b@c>": None,
            '"" <sip:b@c>': None,
            '"open <sip:b@c>': None,
            'Bob "x" <sip:b@c>': None,
            '"a" b <sip:b@c>': None,
            "sip:b@c": None,
            "\x0b" * 50: None,
        }
        for value, name in cases.items():
            with self.subTest(value=value):
                self.assertEqual(CallerID(value).display_name, name)


class CountTests(SynchronousTestCase):
    """Per-element work is bounded: parameters per value and values per header line."""

    def test_parameters_bounded(self) -> None:
        fits = "<sip:a@b>" + ";p=1" * MAX_PARAMS
        self.assertEqual(len(NameAddr.parse(fits).params), 1)
        self.assertRaises(SIPParseError, NameAddr.parse, fits + ";q")
        message = Message.parse(invite().replace(b";rport", b";rport" + b";a" * MAX_PARAMS))
        self.assertRaises(SIPParseError, message.validate)
        self.assertRaises(SIPParseError, lambda: message.top_via)

    def test_list_values_bounded(self) -> None:
        for sep in (",y", ",<sip:x>"):
            fits = "Supported: x" + sep * (MAX_LIST_VALUES - 1)
            message = Message.parse(invite(extra=fits))
            self.assertEqual(len(message.headers.getlist("Supported")), MAX_LIST_VALUES)
            over = Message.parse(invite(extra=fits + sep))
            self.assertRaises(SIPParseError, over.headers.getlist, "Supported")
