"""Tests for voiptwisted.codecs.g711: bit-exact G.711 against the standard library's audioop."""

from __future__ import annotations

import warnings

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # independent oracle; removed in Python 3.13

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


class G711ExactnessTests(SynchronousTestCase):
    """ITU-T G.711 (RFC 3551 §4.5.14 PCMU/PCMA): every input against audioop."""

    def test_ulaw_encode_all_65536_inputs(self) -> None:
        expected = audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)
        self.assertEqual(ulaw_encode(ALL_SAMPLES), expected)

    def test_alaw_encode_all_65536_inputs(self) -> None:
        expected = audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)
        self.assertEqual(alaw_encode(ALL_SAMPLES), expected)

    def test_ulaw_decode_all_256_codes(self) -> None:
        decoded = ulaw_decode(ALL_CODES)
        self.assertEqual(decoded.dtype, np.int16)
        self.assertEqual(decoded.tobytes(), audioop.ulaw2lin(ALL_CODES, 2))

    def test_alaw_decode_all_256_codes(self) -> None:
        decoded = alaw_decode(ALL_CODES)
        self.assertEqual(decoded.dtype, np.int16)
        self.assertEqual(decoded.tobytes(), audioop.alaw2lin(ALL_CODES, 2))

    def test_known_code_words(self) -> None:
        """G.711 landmarks: silence is 0xFF (µ-law) / 0xD5 (A-law); full scale 0x80 / 0xAA."""
        self.assertEqual(ulaw_encode(np.zeros(1, np.int16)), b"\xff")
        self.assertEqual(alaw_encode(np.zeros(1, np.int16)), b"\xd5")
        self.assertEqual(ulaw_encode(np.array([32767], np.int16)), b"\x80")
        self.assertEqual(alaw_encode(np.array([32767], np.int16)), b"\xaa")


class G711InterfaceTests(SynchronousTestCase):
    def test_bytes_input_is_native_int16(self) -> None:
        frame = (np.sin(np.arange(160) / 5) * 20000).astype(np.int16)
        self.assertEqual(ulaw_encode(frame.tobytes()), ulaw_encode(frame))
        self.assertEqual(alaw_encode(memoryview(frame.tobytes())), alaw_encode(frame))

    def test_decode_accepts_uint8_array_and_memoryview(self) -> None:
        codes = np.arange(256, dtype=np.uint8)
        np.testing.assert_array_equal(ulaw_decode(codes), ulaw_decode(memoryview(ALL_CODES)))

    def test_round_trip_is_close(self) -> None:
        """Decoding an encoded sample stays within the segment's quantisation step."""
        for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
            back = decode(encode(ALL_SAMPLES)).astype(np.int32)
            error = np.abs(back - ALL_SAMPLES.astype(np.int32))
            self.assertLessEqual(int(error.max()), 1100)
            self.assertLessEqual(int(error[32768 - 64 : 32768 + 64].max()), 16)

    def test_rejects_wrong_dtype_and_odd_length(self) -> None:
        with self.assertRaises(TypeError):
            ulaw_encode(np.zeros(4, np.float32))
        with self.assertRaises(TypeError):
            alaw_decode(np.zeros(4, np.int16))
        with self.assertRaises(ValueError):
            alaw_encode(b"\x00\x00\x00")
