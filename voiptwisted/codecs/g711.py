"""G.711 µ-law (PCMU) and A-law (PCMA) codecs, vectorised with numpy (ITU-T G.711).

Encoding and decoding are single table look-ups: a 256-entry decode table
and a 65,536-entry encode table indexed by the int16 sample's bit pattern,
both built once at import from the G.711 segment rules.  The results are
bit-exact with the reference implementation used by Python's ``audioop``.

Samples are one-dimensional ``int16`` arrays (or bytes holding native-endian
int16); encoded audio is ``bytes`` (one octet per sample) for the wire, and
decoders accept ``bytes``/``memoryview``/``uint8`` arrays.

:class:`G711Encoder` and :class:`G711Decoder` are the coder objects the
:mod:`voiptwisted.codecs` registry hands out for PCMA and PCMU.  G.711 keeps no
state between packets, so every call shares one pair per law; they expose their
tables so the RTP path can code straight into its preallocated send buffer.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALAW_DECODER",
    "ALAW_ENCODER",
    "ULAW_DECODER",
    "ULAW_ENCODER",
    "G711Decoder",
    "G711Encoder",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # 14-bit magnitude limit before the bias is added
_SEG_END_ULAW = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)
_SEG_END_ALAW = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], np.int32)


def _build_ulaw_encode() -> np.ndarray:
    """µ-law encoder over all 16-bit inputs (G.711 §3, 14-bit linear domain)."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_END_ULAW, mag, side="left")
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code) ^ mask
    table = np.empty(65536, np.uint8)
    # Index by the uint16 bit pattern of the int16 sample.
    table[np.arange(-32768, 32768, dtype=np.int32) & 0xFFFF] = code.astype(np.uint8)
    return table


def _build_alaw_encode() -> np.ndarray:
    """A-law encoder over all 16-bit inputs (G.711 §2, 13-bit linear domain)."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_SEG_END_ALAW, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    code = (seg << 4) | ((mag >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code) ^ mask
    table = np.empty(65536, np.uint8)
    table[np.arange(-32768, 32768, dtype=np.int32) & 0xFFFF] = code.astype(np.uint8)
    return table


def _build_ulaw_decode() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_decode() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENC = _build_ulaw_encode()
_ALAW_ENC = _build_alaw_encode()
_ULAW_DEC = _build_ulaw_decode()
_ALAW_DEC = _build_alaw_decode()
for _table in (_ULAW_ENC, _ALAW_ENC, _ULAW_DEC, _ALAW_DEC):
    _table.setflags(write=False)


def _as_uint16(samples: npt.ArrayLike | bytes | bytearray | memoryview) -> np.ndarray:
    if isinstance(samples, bytes | bytearray | memoryview):
        if len(samples) % 2:
            raise ValueError("16-bit sample buffer has an odd number of bytes")
        return np.frombuffer(samples, dtype=np.uint16)
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        raise TypeError(f"G.711 encoders take int16 samples, not {arr.dtype}")
    return arr.view(np.uint16)


def _as_uint8(data: npt.ArrayLike | bytes | bytearray | memoryview) -> np.ndarray:
    if isinstance(data, bytes | bytearray | memoryview):
        return np.frombuffer(data, dtype=np.uint8)
    arr = np.asarray(data)
    if arr.dtype != np.uint8:
        raise TypeError(f"G.711 decoders take uint8 code words, not {arr.dtype}")
    return arr


def ulaw_encode(samples: npt.ArrayLike | bytes | bytearray | memoryview) -> bytes:
    """Encode int16 samples to µ-law (PCMU, RFC 3551 §4.5.14) octets."""
    return _ULAW_ENC[_as_uint16(samples)].tobytes()


def alaw_encode(samples: npt.ArrayLike | bytes | bytearray | memoryview) -> bytes:
    """Encode int16 samples to A-law (PCMA, RFC 3551 §4.5.14) octets."""
    return _ALAW_ENC[_as_uint16(samples)].tobytes()


def ulaw_decode(data: npt.ArrayLike | bytes | bytearray | memoryview) -> np.ndarray:
    """Decode µ-law octets to a new int16 ndarray."""
    return _ULAW_DEC[_as_uint8(data)]


def alaw_decode(data: npt.ArrayLike | bytes | bytearray | memoryview) -> np.ndarray:
    """Decode A-law octets to a new int16 ndarray."""
    return _ALAW_DEC[_as_uint8(data)]


class G711Encoder:
    """Encodes int16 samples into one G.711 octet each, by table look-up (stateless).

    ``encode_table`` holds the 65,536 code words indexed by the sample's bit pattern
    as uint16 (read-only), for callers that code into their own buffer.
    """

    __slots__ = ("encode_table",)

    def __init__(self, encode_table: np.ndarray) -> None:
        self.encode_table = encode_table

    def encode(self, samples: npt.ArrayLike | bytes | bytearray | memoryview) -> bytes:
        """The code words of *samples* (int16 array or native-endian int16 bytes)."""
        return self.encode_table[_as_uint16(samples)].tobytes()


class G711Decoder:
    """Decodes G.711 octets into int16 samples, by table look-up (stateless).

    ``decode_table`` holds the 256 samples indexed by the code word (read-only).
    """

    __slots__ = ("decode_table",)

    def __init__(self, decode_table: np.ndarray) -> None:
        self.decode_table = decode_table

    def decode(self, payload: npt.ArrayLike | bytes | bytearray | memoryview) -> np.ndarray:
        """A new int16 ndarray with one sample per octet of *payload*."""
        return self.decode_table[_as_uint8(payload)]


#: The shared coders of A-law (PCMA) and µ-law (PCMU).
ALAW_ENCODER = G711Encoder(_ALAW_ENC)
ALAW_DECODER = G711Decoder(_ALAW_DEC)
ULAW_ENCODER = G711Encoder(_ULAW_ENC)
ULAW_DECODER = G711Decoder(_ULAW_DEC)
