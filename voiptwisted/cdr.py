"""Call records (``--cdr PATH``): one JSON line per ended call, with an estimated MOS.

Each :class:`~voiptwisted.metrics.CallRecord` the service's observer hands over becomes
one line appended to the file (mode 0600, created if missing).  The write is a plain
blocking ``os.write`` of one small line (a few hundred bytes) on a file opened with
``O_APPEND``: each line lands whole even with several writers, and at a few calls per
second its cost is far below that of the call's own signalling.  Parties are masked as
in the logs (``*lice@example.com``) unless ``full_uris`` (``--cdr-full-uris``).

MOS is estimated with a simplified ITU-T G.107 E-model (:func:`r_factor`,
:func:`mos_from_r`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.logger import Logger

__all__ = [
    "CODEC_IMPAIRMENTS",
    "DEFAULT_DELAY_MS",
    "CallRecordWriter",
    "cdr_line",
    "estimated_mos",
    "mos_from_r",
    "r_factor",
]

log = Logger()

#: Codec equipment impairment Ie and packet-loss robustness Bpl (ITU-T G.113 Appendix I
#: values; G.711 with packet loss concealment: Ie 0, Bpl 25.1).  G.722 and Opus are rated
#: on G.107's narrowband scale like G.711 (Ie 0), a conservative choice: their wideband
#: gain (G.107.1) is not credited; Opus's in-band FEC/PLC is credited with Bpl 30.
#: Unknown codecs get G.711's figures.
CODEC_IMPAIRMENTS: dict[str, tuple[float, float]] = {
    "PCMU": (0.0, 25.1),
    "PCMA": (0.0, 25.1),
    "G722": (0.0, 25.1),
    "OPUS": (0.0, 30.0),
}
#: One-way mouth-to-ear delay (ms) assumed when none is measured: 20 ms packetisation,
#: the 60 ms jitter buffer window and a few ms of network and processing.
DEFAULT_DELAY_MS = 85.0
#: G.107 default basic signal-to-noise ratio R0 less the default simultaneous
#: impairment Is (94.77 - 1.41 ≈ 93.2): the R of a perfect narrowband call.
_R_DEFAULT = 93.2


def r_factor(codec: str | None, loss_percent: float, delay_ms: float = DEFAULT_DELAY_MS) -> float:
    """The E-model rating R = R0 - Is - Id - Ie,eff (+A = 0), ITU-T G.107 §7.

    Id is the delay impairment for one-way delay *d* in ms (the usual simplification of
    G.107's Idd/Idte for echo-cancelled calls): 0.024·d + 0.11·(d - 177.3) above 177.3 ms.
    Ie,eff = Ie + (95 - Ie)·Ppl / (Ppl / BurstR + Bpl) with random loss (BurstR = 1).
    """
    ie, bpl = CODEC_IMPAIRMENTS.get((codec or "").upper(), CODEC_IMPAIRMENTS["PCMU"])
    ppl = min(max(loss_percent, 0.0), 100.0)
    ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl)
    d = max(delay_ms, 0.0)
    idd = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    return _R_DEFAULT - idd - ie_eff


def mos_from_r(r: float) -> float:
    """MOS (conversational quality, 1-4.5) from R, ITU-T G.107 Annex B (B-4)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6


def estimated_mos(
    codec: str | None, received: int, lost: int, delay_ms: float = DEFAULT_DELAY_MS
) -> float | None:
    """The MOS of a call that received *received* RTP packets and lost *lost*; None when
    no media flowed (nothing to rate)."""
    expected = received + max(lost, 0)
    if expected <= 0:
        return None
    loss = 100.0 * max(lost, 0) / expected
    return round(mos_from_r(r_factor(codec, loss, delay_ms)), 2)


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    import datetime

    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cdr_line(record: Any, *, full_uris: bool = False) -> str:
    """*record* (a ``CallRecord``) as one JSON line (with its newline)."""
    from voiptwisted.apps import shown_party

    end = record.end if record.end is not None else record.start
    answered = record.answer
    fields = {
        "call_id": record.call_id,
        "direction": record.direction,
        "from": shown_party(record.from_uri, full=full_uris),
        "to": shown_party(record.to_uri, full=full_uris),
        "start": _iso(record.start),
        "answer": _iso(answered),
        "end": _iso(end),
        "duration": round(end - answered, 3) if answered is not None else 0.0,
        "final_status": record.final_status,
        "hangup_side": record.hangup_side,
        "hangup_reason": record.hangup_reason,
        "codec": record.codec,
        "srtp": record.srtp,
        "packets_sent": record.packets_sent,
        "packets_received": record.packets_received,
        "packets_lost": max(record.lost, 0),
        "jitter_max_ms": round(record.jitter_max_ms, 2),
        "jitter_mean_ms": round(record.jitter_mean_ms, 2),
        "mos": estimated_mos(record.codec, record.packets_received, record.lost),
    }
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True) + "\n"


class CallRecordWriter:
    """Appends :func:`cdr_line` of each call to *path* (mode 0600, opened at :meth:`open`)."""

    def __init__(self, path: str | os.PathLike[str], *, full_uris: bool = False) -> None:
        self.path = os.fspath(path)
        self.full_uris = full_uris
        self._fd: int | None = None

    def open(self) -> None:
        """Open (or create, mode 0600) the file for appending; raises OSError."""
        if self._fd is None:
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __call__(self, record: Any) -> None:
        """Write *record*'s line; an error is logged once per call, never raised."""
        if self._fd is None:
            return
        try:
            os.write(self._fd, cdr_line(record, full_uris=self.full_uris).encode("ascii"))
        except OSError as e:
            log.error("cannot write the call record to {path}: {why}", path=self.path,
                      why=e.strerror)
