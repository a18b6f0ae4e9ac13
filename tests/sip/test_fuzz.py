"""Bounded fuzzing: mutated torture messages and random bytes into the parsers.

Deterministic (seeded), a few thousand cases, no timing.  The only exceptions
allowed out are the documented ones: SIPParseError (and its FramingError).
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.sip.framing import FramingError, StreamFramer
from voiptwisted.sip.headers import NameAddr, Via, parse_params, split_commas
from voiptwisted.sip.message import Message, SIPParseError

DATA = Path(__file__).parent / "data" / "rfc4475"
SEEDS = [p.read_bytes() for p in sorted(DATA.glob("*.dat"))]
INTERESTING = [b"\r\n", b"\r\n ", b":", b";", b",", b'"', b"<", b">", b"\\", b"\x00", b"\xff",
               b" ", b"SIP/2.0", b"l: 99999999999\r\n", b"=", b"\r", b"\n", b"%"]  # fmt: skip


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            del buf[pos : pos + rng.randint(1, 20)]
        elif op == 1:
            buf[pos:pos] = rng.choice(INTERESTING)
        elif op == 2 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 3:
            buf = buf[:pos]
        else:
            start = rng.randrange(len(buf) + 1)
            buf[pos:pos] = buf[start : start + rng.randint(1, 40)]
    return bytes(buf)


def exercise(message: Message) -> None:
    """Touch every accessor; each may only raise SIPParseError."""
    names = ("call_id", "cseq", "branch", "local_tag", "remote_tag", "via", "from_", "to",
             "contact", "route", "record_route", "expires", "max_forwards", "top_via")  # fmt: skip
    for name in names:
        with contextlib.suppress(SIPParseError):
            getattr(message, name)
    message.headers.items()
    bytes(message)


class FuzzTests(SynchronousTestCase):
    def test_mutated_torture_messages(self) -> None:
        rng = random.Random(4475)
        for i in range(3000):
            data = mutate(rng, rng.choice(SEEDS))
            with self.subTest(case=i), contextlib.suppress(SIPParseError):
                exercise(Message.parse(data))

    def test_validate_agrees_with_the_objects(self) -> None:
        """validate() (whole-value regexes) rejects exactly what building the objects
        rejects, on mutated torture messages."""
        rng = random.Random(25)
        checked = 0
        for i in range(3000):
            try:
                message = Message.parse(mutate(rng, rng.choice(SEEDS)))
            except SIPParseError:
                continue
            checked += 1
            try:
                for name in ("via", "from_", "to", "contact", "route", "record_route", "expires"):
                    getattr(message, name)
                objects_ok = True
            except SIPParseError:
                objects_ok = False
            try:
                message.validate()
                validate_ok = True
            except SIPParseError:
                validate_ok = False
            with self.subTest(case=i):
                self.assertEqual(validate_ok, objects_ok, bytes(message)[:300])
        self.assertGreater(checked, 300)

    def test_random_bytes(self) -> None:
        rng = random.Random(3261)
        alphabet = b"INVITESIP/2.0 \r\n:;,<>\"\\=abc123@.%\t\x00\xff"
        for i in range(1500):
            data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
            if rng.random() < 0.5:
                data = b"OPTIONS sip:a@b SIP/2.0\r\n" + data + b"\r\n\r\n"
            with self.subTest(case=i), contextlib.suppress(SIPParseError):
                exercise(Message.parse(data, strict=True))

    def test_framer(self) -> None:
        rng = random.Random(5626)
        for i in range(400):
            stream = b"".join(mutate(rng, rng.choice(SEEDS)) for _ in range(3))
            framer = StreamFramer(max_header_size=4096, max_body_size=4096)
            with self.subTest(case=i):
                try:
                    pos = 0
                    while pos < len(stream):
                        step = rng.randint(1, 64)
                        for frame in framer.feed(stream[pos : pos + step]):
                            with contextlib.suppress(SIPParseError):
                                Message.parse(frame)
                        pos += step
                except FramingError as exc:
                    self.assertIn(exc.status_code, (400, 513))

    def test_value_parsers(self) -> None:
        rng = random.Random(25)
        alphabet = 'sip:<>";,= \t\\abc@1.%[]/SIP2.0UDPtagbranch'
        for i in range(2000):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
            for parse in (NameAddr.parse, Via.parse, parse_params, split_commas):
                with self.subTest(case=i, parser=parse.__qualname__), contextlib.suppress(
                    SIPParseError
                ):
                    parse(text)
