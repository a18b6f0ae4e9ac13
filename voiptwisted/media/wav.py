"""WAV read/write helpers (stdlib ``wave`` + numpy) and resampling to the call's rate.

Audio inside voiptwisted is ``int16`` numpy arrays; these helpers convert any
PCM WAV (8/16/24/32-bit integer, any channel count, any rate) into mono int16
at the rate a session needs, and write multi-channel int16 WAVs, whole or piece by
piece (:class:`WavAppender`, for recordings).  numpy is
imported by the first helper called, not with this module (issue 6: a service
that only imports the applications stays light while idle).
"""

from __future__ import annotations

import os
import struct
import wave
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    np = None

__all__ = [
    "WavAppender",
    "WavError",
    "create_private",
    "load_mono",
    "read_wav",
    "resample",
    "to_mono",
    "write_wav",
]

#: Refuse files that would decode to more than this many samples per channel (1 h at 48 kHz).
MAX_FRAMES = 48_000 * 3600
#: RIFF sizes are 32-bit: the most PCM data bytes one WAV can hold.
MAX_DATA_BYTES = 0xFFFFFFFF - 36
#: Zeros written per ``write`` call for silence (64 KiB: silence costs no memory beyond this).
_ZEROS = bytes(65536)
_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")


class WavError(ValueError):
    """The file is not a PCM WAV we can read."""


def _load_numpy() -> None:
    """Import numpy once, into this module's globals (first use, not start-up)."""
    global np
    if np is None:
        import numpy

        np = numpy


def _decode_frames(raw: bytes, width: int, channels: int) -> np.ndarray:
    if width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.int32) - 128) << 8
    elif width == 2:
        data = np.frombuffer(raw, "<i2").astype(np.int32)
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        data = ((b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)) >> 16
    elif width == 4:
        data = np.frombuffer(raw, "<i4") >> 16
    else:
        raise WavError(f"unsupported sample width {width}")
    return data.reshape(-1, channels)


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a PCM WAV: returns (samples as int16 array shaped (frames, channels), rate)."""
    _load_numpy()
    try:
        with wave.open(os.fspath(path), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            frames = wav.getnframes()
            if not 1 <= channels <= 32 or rate <= 0:
                raise WavError("unsupported channel count or rate")
            if frames > MAX_FRAMES:
                raise WavError("file too long")
            raw = wav.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise WavError(f"not a PCM WAV file: {exc}") from None
    usable = len(raw) - len(raw) % (width * channels)
    data = _decode_frames(raw[:usable], width, channels)
    return data.astype(np.int16), rate


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average all channels into one (int16)."""
    _load_numpy()
    if samples.ndim == 1:
        return samples.astype(np.int16, copy=False)
    return samples.astype(np.int32).mean(axis=1).round().astype(np.int16)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample mono int16 audio from *rate* to *target* Hz.

    A band-limited polyphase resampler (libswresample, :func:`voiptwisted.media.resample
    .resample`): what lies above the lower rate's Nyquist frequency is filtered out rather
    than aliased, so a 44.1 kHz file played into an 8 kHz call has no folded-back noise.
    """
    _load_numpy()
    if rate == target or samples.size == 0:
        return samples.astype(np.int16, copy=False)
    from voiptwisted.media.resample import resample as convert  # PyAV: only when needed

    return convert(samples, rate, target)


def load_mono(path: str | os.PathLike[str], rate: int) -> np.ndarray:
    """Read any PCM WAV and return it as mono int16 at *rate* Hz."""
    samples, file_rate = read_wav(path)
    return resample(to_mono(samples), file_rate, rate)


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, rate: int) -> None:
    """Write int16 samples shaped (frames,) or (frames, channels) as a PCM WAV."""
    _load_numpy()
    data = np.asarray(samples, dtype=np.int16)
    if data.ndim == 1:
        data = data[:, None]
    with wave.open(os.fspath(path), "wb") as wav:
        wav.setnchannels(data.shape[1])
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(data.astype("<i2").tobytes())


def create_private(path: str | os.PathLike[str]) -> int:
    """Create *path* for writing, readable by its owner only (0600), and return its fd.

    Never overwrites and never follows a symlink (``O_EXCL``, ``O_NOFOLLOW``): an
    existing file of the same name raises ``FileExistsError``.  Blocking file I/O.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)


class WavAppender:
    """A 16-bit PCM WAV written piece by piece: the file is created with
    :func:`create_private`, audio and silence are appended, and the RIFF and ``data``
    sizes in the header are patched by :meth:`update_header` (a recording does so after
    each batch) and :meth:`close`, so the file on disk is a complete WAV of everything
    written up to then.  Blocking file I/O: recordings call it from a thread.
    """

    def __init__(self, path: str | os.PathLike[str], channels: int, rate: int) -> None:
        self.path = os.fspath(path)
        self.channels = channels
        self.rate = rate
        self.frame_bytes = 2 * channels
        self.data_bytes = 0
        self._fd: int | None = create_private(self.path)
        try:
            self._write_all(self._header())
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    def _header(self) -> bytes:
        return _HEADER.pack(
            b"RIFF", 36 + self.data_bytes, b"WAVE", b"fmt ", 16, 1, self.channels, self.rate,
            self.rate * self.frame_bytes, self.frame_bytes, 16, b"data", self.data_bytes,
        )  # fmt: skip

    def _write_all(self, data: bytes | memoryview) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def _room(self, size: int) -> None:
        if self._fd is None:
            raise WavError(f"{self.path}: already closed")
        if self.data_bytes + size > MAX_DATA_BYTES:
            raise WavError(f"{self.path}: a WAV holds at most {MAX_DATA_BYTES} bytes of audio")

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Append interleaved little-endian int16 frames (whole frames only)."""
        if len(data) % self.frame_bytes:
            raise WavError(f"{len(data)} bytes is not a whole number of frames")
        self._room(len(data))
        self._write_all(data)
        self.data_bytes += len(data)

    def append_silence(self, frames: int) -> None:
        """Append *frames* frames of zeros, 64 KiB per write."""
        left = frames * self.frame_bytes
        self._room(left)
        while left:
            chunk = min(left, len(_ZEROS))
            self._write_all(memoryview(_ZEROS)[:chunk])
            left -= chunk
        self.data_bytes += frames * self.frame_bytes

    def update_header(self) -> None:
        """Write the current RIFF and ``data`` sizes into the header (the data stays)."""
        assert self._fd is not None
        os.pwrite(self._fd, self._header(), 0)

    def close(self) -> None:
        """Patch the header's sizes and close the file.  Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.pwrite(fd, self._header(), 0)
        finally:
            os.close(fd)
