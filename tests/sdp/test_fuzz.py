"""Bounded fuzzing of SessionDescription.parse: only SDPParseError may escape, and whatever
parses serialises to bytes that parse back to an equal description (a fixed point)."""

import pathlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from voiptwisted.sdp import SDPParseError, SessionDescription

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SEED = 20260428


def _seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted(FIXTURES.glob("*.sdp"))]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """One random structural or byte-level mutation of *data*."""
    buf = bytearray(data)
    lines = data.split(b"\n")
    choice = rng.randrange(9)
    if choice == 0 and buf:
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif choice == 1:
        buf[rng.randrange(len(buf) + 1):0] = bytes(rng.randrange(256) for _ in range(8))
    elif choice == 2 and buf:
        start = rng.randrange(len(buf))
        del buf[start:start + rng.randrange(1, 40)]
    elif choice == 3:
        del buf[rng.randrange(len(buf) + 1):]
    elif choice == 4:
        rng.shuffle(lines)
        return b"\n".join(lines)
    elif choice == 5:
        line = rng.choice(lines)
        lines.insert(rng.randrange(len(lines) + 1), line)
        return b"\n".join(lines)
    elif choice == 6:
        i = rng.randrange(len(lines))
        lines[i] = rng.choice(b"vosiuepcbtrzkamxV=: ").to_bytes(1, "big") + lines[i][1:]
        return b"\n".join(lines)
    elif choice == 7:
        i = rng.randrange(len(lines))
        tokens = lines[i].split(b" ")
        tokens[rng.randrange(len(tokens))] = rng.choice(
            [b"", b"-1", b"99999999999999999999999", b"x", b"0/0", b"\xff", b"::1", b"\r"]
        )
        lines[i] = b" ".join(tokens)
        return b"\n".join(lines)
    else:
        i = rng.randrange(len(lines))
        lines[i] = lines[i].replace(b"\r", b"") + rng.choice([b"\r", b" ", b"\t", b"\x00", b""])
        return b"\n".join(lines)
    return bytes(buf)


class FuzzTests(unittest.SynchronousTestCase):
    def check(self, data: bytes) -> bool:
        """Parse *data*; on success assert the serialisation is a fixed point."""
        try:
            sd = SessionDescription.parse(data)
        except SDPParseError as error:
            self.assertTrue(str(error))
            return False
        out = bytes(sd)
        again = SessionDescription.parse(out)
        self.assertEqual(again, sd, data)
        self.assertEqual(bytes(again), out, data)
        return True

    def test_mutated_fixtures(self) -> None:
        """3000 seeded mutations (1-3 each) of the fixtures: no exception but SDPParseError."""
        rng = random.Random(SEED)
        seeds = _seeds()
        outcomes = {True: 0, False: 0}
        for _ in range(3000):
            data = rng.choice(seeds)
            for _ in range(rng.randint(1, 3)):
                data = _mutate(rng, data)
            outcomes[self.check(data)] += 1
        # Both outcomes must occur, or the mutations test nothing.
        self.assertGreater(outcomes[True], 100)
        self.assertGreater(outcomes[False], 100)

    def test_random_bytes(self) -> None:
        """Random byte strings, with and without a valid header in front."""
        rng = random.Random(SEED + 1)
        header = b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n"
        for _ in range(1000):
            noise = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
            self.check(noise)
            self.check(header + noise)

    def test_size_bound_is_cheap(self) -> None:
        """A 1 MiB body is refused by its size before any line is split."""
        with self.assertRaises(SDPParseError):
            SessionDescription.parse(b"a" * (1 << 20))

    def test_rfc4475_sdp01_body(self) -> None:
        """The body of RFC 4475 §3.3.8 (sdp01): valid SDP; the bad ``a=rtpmap:31 LPC``
        is kept as a plain attribute, not folded."""
        data = (
            b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.5\r\ns=-\r\n"
            b"c=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\n"
            b"m=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"
        )
        sd = SessionDescription.parse(data)
        self.assertEqual(bytes(sd), data)
        self.assertEqual(sd.media[1].get_format(31).encoding_name, "H261")
        self.assertEqual(sd.media[1].get_attribute("rtpmap").value, "31 LPC")

    @settings(max_examples=300, deadline=None)
    @given(st.lists(
        st.tuples(
            st.sampled_from("vosiuepcbtrzkamx"),
            st.text(st.characters(blacklist_characters="\n"), max_size=30),
        ),
        max_size=20,
    ))
    def test_line_structured(self, lines: list[tuple[str, str]]) -> None:
        """Hypothesis: arbitrary ``<letter>=<text>`` sequences behind a valid header."""
        body = "".join(f"{letter}={value}\r\n" for letter, value in lines)
        data = b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n" + body.encode(
            "utf-8", "surrogatepass"
        )
        self.check(data)
