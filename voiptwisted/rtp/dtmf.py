"""RFC 4733 telephone-events for DTMF: payload codec, de-duplicating receiver, sender.

Pure: no clock and no sockets.  The receiver is fed payloads with their RTP
timestamp and reports each key press exactly once; the sender turns a digit
string into the per-20 ms-tick packet sequence of RFC 4733 §2.5.1.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "DTMF_EVENTS",
    "DTMFEvent",
    "DTMFParseError",
    "DTMFReceiver",
    "DTMFSender",
    "digit_to_event",
    "event_to_digit",
]

#: Event codes 0-15 of RFC 4733 §3.2 (Table 3), in code order.
DTMF_EVENTS = "0123456789*#ABCD"

_EVENT = struct.Struct("!BBH")
_MAX_DURATION = 0xFFFF


class DTMFParseError(ValueError):
    """A telephone-event payload is malformed (RFC 4733 §2.3)."""


def digit_to_event(digit: str) -> int:
    """Map ``0-9 * # A-D`` (case-insensitive) to its event code; ValueError otherwise."""
    code = DTMF_EVENTS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


def event_to_digit(event: int) -> str | None:
    """Map an event code to its DTMF digit, or None for non-DTMF events (e.g. 16 = flash)."""
    return DTMF_EVENTS[event] if 0 <= event < len(DTMF_EVENTS) else None


@dataclass(frozen=True, slots=True)
class DTMFEvent:
    """The 4-octet telephone-event payload (RFC 4733 §2.3).

    ``volume`` is the power level in -dBm0 (0-63); ``duration`` is in RTP
    timestamp units since the event's start (0-65535).
    """

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    def encode(self) -> bytes:
        """Wire form; the R bit is always sent as zero (§2.3.3)."""
        if not 0 <= self.event <= 255:
            raise ValueError(f"event code {self.event} out of range 0-255")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"volume {self.volume} out of range 0-63")
        if not 0 <= self.duration <= _MAX_DURATION:
            raise ValueError(f"duration {self.duration} out of range 0-65535")
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    __bytes__ = encode

    @classmethod
    def decode(cls, payload: bytes | bytearray | memoryview) -> DTMFEvent:
        """Parse the first event of a payload; the R bit is ignored (§2.3.3)."""
        if len(payload) < 4:
            raise DTMFParseError(f"telephone-event payload too short ({len(payload)} bytes)")
        event, flags, duration = _EVENT.unpack_from(payload, 0)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    @property
    def digit(self) -> str | None:
        """The DTMF digit for this event, or None when it is not a DTMF event."""
        return event_to_digit(self.event)


class DTMFReceiver:
    """Turns received telephone-event packets into one digit per key press.

    All packets of one event share the RTP timestamp (RFC 4733 §2.5.1.1):
    the start, the updates and the three end packets are one key press.  The
    digit is reported on the first packet seen for a timestamp, so a lost
    start packet still yields the digit.  Memory is bounded: only the last
    ``history`` event timestamps are remembered.
    """

    def __init__(self, history: int = 32) -> None:
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._history = max(1, history)

    def receive(self, timestamp: int, payload: bytes | bytearray | memoryview) -> str | None:
        """Return the digit when this packet starts a new event, else None.

        Malformed payloads and non-DTMF events (e.g. flash) return None.
        """
        try:
            event = DTMFEvent.decode(payload)
        except DTMFParseError:
            return None
        key = timestamp & 0xFFFFFFFF
        if key in self._seen:
            return None
        self._seen[key] = None
        if len(self._seen) > self._history:
            self._seen.popitem(last=False)
        return event.digit


class DTMFSender:
    """Builds the RFC 4733 §2.5.1 packet sequence for a digit string.

    Each event is sent as: a first packet with the marker bit (§2.5.1.2),
    one update every ``interval`` carrying the cumulative duration, and the
    final packet (E bit, full duration) three times (§2.5.1.4), all with the
    event's start timestamp.  Events are separated by ``gap`` seconds.
    """

    def __init__(
        self,
        *,
        duration: float = 0.1,
        gap: float = 0.06,
        volume: int = 10,
        clock_rate: int = 8000,
        interval: float = 0.02,
    ) -> None:
        self.step = round(interval * clock_rate)
        if self.step <= 0:
            raise ValueError("interval must be at least one RTP timestamp unit")
        self.ticks_per_event = max(1, round(duration / interval))
        if self.ticks_per_event * self.step > _MAX_DURATION:
            raise ValueError("event duration does not fit the 16-bit duration field")
        self.gap_ticks = max(0, round(gap / interval))
        if not 0 <= volume <= 63:
            raise ValueError(f"volume {volume} out of range 0-63")
        self.volume = volume

    def packets(self, digits: str) -> list[tuple[bool, int, bytes] | None]:
        """One entry per tick: ``(marker, timestamp_offset, payload)`` or None (no packet).

        ``timestamp_offset`` is the event's start relative to the first tick,
        in RTP timestamp units; the caller adds its own timestamp base.
        Raises ValueError for a character that is not a DTMF digit.
        """
        codes = [digit_to_event(d) for d in digits]
        ticks: list[tuple[bool, int, bytes] | None] = []
        for index, code in enumerate(codes):
            if index:
                ticks.extend([None] * self.gap_ticks)
            start = len(ticks) * self.step
            for k in range(1, self.ticks_per_event + 1):
                payload = DTMFEvent(code, False, self.volume, k * self.step).encode()
                ticks.append((k == 1, start, payload))
            final = DTMFEvent(code, True, self.volume, self.ticks_per_event * self.step).encode()
            ticks.extend([(False, start, final)] * 3)
        return ticks
