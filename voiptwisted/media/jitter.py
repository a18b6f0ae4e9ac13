"""A small reordering jitter buffer for received RTP (RFC 3550 §5.1 sequence rules).

Packets go in as they arrive; :meth:`JitterBuffer.push` returns the packets
that are now ready for playout, in sequence order.  A missing packet is
waited for until the packets buffered after it span ``window`` seconds of
media (60 ms = 3 packets at 20 ms), then it is counted lost and playout
skips it.  With ``report_loss`` the output then holds a :class:`Lost` marker
(how many packets are missing) just before the packet playout resumes with, so
the receiver can conceal the gap: with the codec's own concealment or, for
Opus, the FEC copy of the lost frame carried in that very next packet (RFC
7587 §3.2).  Duplicates and packets older than the last one played are
dropped.  Sequence numbers wrap at 2**16; RTP timestamps at 2**32.  Memory
is bounded by ``max_packets``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["JitterBuffer", "Lost"]

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32
#: Forward sequence jump beyond which the stream is treated as restarted (RFC 3550 §A.1).
_MAX_DROPOUT = 3000
#: Backward distance beyond which a packet is a restart candidate, not a late packet.
_MAX_MISORDER = 100


class _Packet(Protocol):
    sequence: int
    timestamp: int
    ssrc: int


class Lost:
    """Playout skips ``count`` missing packets here (``JitterBuffer(report_loss=True)``)."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    def __repr__(self) -> str:
        return f"Lost({self.count})"


class JitterBuffer:
    """Reorders packets within ``window`` seconds and drops duplicates and late arrivals.

    Works on any object with ``sequence``, ``timestamp`` and ``ssrc`` (an
    :class:`~voiptwisted.rtp.packet.RTPPacket`).  A new SSRC, or a large
    sequence jump confirmed by the next packet (RFC 3550 §A.1), restarts the
    buffer: what was buffered is released first.
    """

    def __init__(
        self, window: float = 0.06, clock_rate: int = 8000, max_packets: int = 50,
        report_loss: bool = False,
    ) -> None:
        if window < 0 or clock_rate <= 0 or max_packets < 1:
            raise ValueError("window >= 0, clock_rate > 0 and max_packets >= 1 required")
        self.window = window
        self.window_units = round(window * clock_rate)
        self.report_loss = report_loss
        self.max_packets = max_packets
        self._buffer: dict[int, _Packet] = {}
        self._started = False
        self._next = 0
        self._ssrc: int | None = None
        self._bad_seq: int | None = None
        self.duplicates = 0
        self.late = 0
        self.lost = 0
        self.played = 0

    def __len__(self) -> int:
        return len(self._buffer)

    def set_clock_rate(self, clock_rate: int) -> None:
        """The stream's RTP clock changed (a new codec): keep ``window`` seconds of media."""
        if clock_rate <= 0:
            raise ValueError("clock_rate > 0 required")
        self.window_units = round(self.window * clock_rate)

    def push(self, packet: _Packet) -> list[_Packet | Lost]:
        """Add one received packet; return the packets ready for playout, in order.

        Fast path for the common case, the next expected packet of the current
        source with nothing buffered: it is played at once.  Every other packet
        takes :meth:`_push_general`; both give the same outputs and counters.
        """
        if self.in_order(packet.sequence & 0xFFFF, packet.ssrc):
            return [packet]
        return self._push_general(packet)

    def in_order(self, sequence: int, ssrc: int) -> bool:
        """:meth:`push`'s fast path without a packet object: True when *sequence* (16
        bits) is the next expected of the current source *ssrc* with nothing buffered,
        and it is then counted as played (the caller plays it at once, as ``push`` would
        have returned it alone).  False changes nothing: the caller pushes the packet.
        Lets the receive path skip building a packet object for the usual packet."""
        if sequence == self._next and not self._buffer and ssrc == self._ssrc and self._started:
            self._next = (sequence + 1) & 0xFFFF
            self._bad_seq = None
            self.played += 1
            return True
        return False

    def _push_general(self, packet: _Packet) -> list[_Packet | Lost]:
        """RFC 3550 §A.1 sequence checks, duplicate/late drops, reordering and release."""
        seq = packet.sequence & 0xFFFF
        out: list[_Packet | Lost] = []
        if not self._started or packet.ssrc != self._ssrc:
            out.extend(self.flush())
            self._restart(packet)
        delta = (seq - self._next) & 0xFFFF
        if delta >= _SEQ_MOD - _MAX_MISORDER:
            self.late += 1
            return out
        if delta >= _MAX_DROPOUT:
            if seq != self._bad_seq:
                self._bad_seq = (seq + 1) & 0xFFFF
                self.late += 1
                return out
            out.extend(self.flush())
            self._restart(packet)
        self._bad_seq = None
        if seq in self._buffer:
            self.duplicates += 1
            return out
        self._buffer[seq] = packet
        self._release(out)
        return out

    def flush(self) -> list[_Packet | Lost]:
        """Release everything buffered, in order (e.g. at the end of the call)."""
        out: list[_Packet | Lost] = []
        while self._buffer:
            self._skip_gap(out)
            self._drain(out)
        return out

    def _restart(self, packet: _Packet) -> None:
        self._started = True
        self._ssrc = packet.ssrc
        self._next = packet.sequence & 0xFFFF
        self._bad_seq = None

    def _drain(self, out: list[_Packet | Lost]) -> None:
        buffer = self._buffer
        nxt = self._next
        while nxt in buffer:
            packet = buffer.pop(nxt)
            out.append(packet)
            nxt = (nxt + 1) & 0xFFFF
            self.played += 1
        self._next = nxt

    def _skip_gap(self, out: list[_Packet | Lost]) -> None:
        """Give up on the missing packet(s): jump to the oldest buffered one."""
        nxt = self._next
        gap = min((s - nxt) & 0xFFFF for s in self._buffer)
        self.lost += gap
        self._next = (nxt + gap) & 0xFFFF
        if gap and self.report_loss:
            out.append(Lost(gap))

    def _release(self, out: list[_Packet | Lost]) -> None:
        self._drain(out)
        while self._buffer and (len(self._buffer) > self.max_packets or self._waited_enough()):
            self._skip_gap(out)
            self._drain(out)

    def _waited_enough(self) -> bool:
        """True when the buffered media after the gap spans ``window`` or more.

        With 20 ms packets and a 60 ms window a missing packet is waited for
        while up to three later packets arrive, i.e. it may arrive up to three
        places out of order.
        """
        nxt = self._next
        oldest = min(self._buffer.values(), key=lambda p: (p.sequence - nxt) & 0xFFFF)
        newest = max(self._buffer.values(), key=lambda p: (p.sequence - nxt) & 0xFFFF)
        ahead = (newest.timestamp - oldest.timestamp) % _TS_MOD
        return ahead < _TS_MOD // 2 and ahead >= self.window_units
