"""RTP and RTCP packets (RFC 3550 §5.1, §6.4) and receiver statistics (RFC 3550 Appendix A).

Pure: bytes in, objects out, objects to bytes.  Parsing is strict (RFC 3550
§A.1 validity checks on the fixed header) and raises only :class:`RTPParseError`.
The RTP parse is on the hot path (one call per received packet), so it uses
precompiled ``struct.Struct`` objects and ``memoryview`` slicing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "Goodbye",
    "RTCPPacket",
    "RTPPacket",
    "RTPParseError",
    "RTPStats",
    "ReceiverReport",
    "ReportBlock",
    "SenderReport",
    "SourceDescription",
    "build_rtcp",
    "ntp_middle32",
    "ntp_timestamp",
    "parse_rtcp",
]

RTP_VERSION = 2
RTP_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203

#: Seconds between the NTP epoch (1900) and the Unix epoch (1970), RFC 868.
NTP_UNIX_OFFSET = 2_208_988_800

_RTP_HEADER = struct.Struct("!BBHII")
_RTP_EXT_HEADER = struct.Struct("!HH")
_RTCP_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IIIIII")
_REPORT_BLOCK = struct.Struct("!IIIIII")
_U32 = struct.Struct("!I")


class RTPParseError(ValueError):
    """An RTP or RTCP packet is malformed (RFC 3550 §A.1/§A.2 validity checks)."""


@dataclass(slots=True)
class RTPPacket:
    """One RTP data packet (RFC 3550 §5.1).

    ``padding`` is the number of padding octets (0 = P bit clear); on the wire
    the last padding octet holds that count (RFC 3550 §5.1).  The header
    extension (RFC 3550 §5.3.1) is present when ``extension_profile`` is not
    None; ``extension_data`` length must be a multiple of 4.
    """

    payload_type: int = 0
    sequence: int = 0
    timestamp: int = 0
    ssrc: int = 0
    payload: bytes = b""
    marker: bool = False
    csrc: list[int] = field(default_factory=list)
    extension_profile: int | None = None
    extension_data: bytes = b""
    padding: int = 0
    version: int = RTP_VERSION

    @property
    def extension(self) -> bool:
        """True when the X bit is set (a header extension is present)."""
        return self.extension_profile is not None

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RTPPacket:
        """Parse one RTP packet; raise :class:`RTPParseError` when it is not valid RTP.

        Checks (RFC 3550 §5.1, §A.1): version 2, CSRC list, extension and
        padding all fit inside the datagram, padding count at least 1.
        """
        n = len(data)
        if n < 12:
            raise RTPParseError(f"RTP packet too short ({n} bytes)")
        b0, b1, seq, ts, ssrc = _RTP_HEADER.unpack_from(data, 0)
        if b0 >> 6 != RTP_VERSION:
            raise RTPParseError(f"RTP version {b0 >> 6} is not 2")
        cc = b0 & 0x0F
        offset = 12
        csrc: list[int]
        if cc:
            end = offset + 4 * cc
            if end > n:
                raise RTPParseError("RTP CSRC list runs past the end of the packet")
            csrc = list(struct.unpack_from(f"!{cc}I", data, offset))
            offset = end
        else:
            csrc = []
        view = memoryview(data)
        ext_profile: int | None = None
        ext_data = b""
        if b0 & 0x10:
            if offset + 4 > n:
                raise RTPParseError("RTP header extension header truncated")
            ext_profile, words = _RTP_EXT_HEADER.unpack_from(data, offset)
            offset += 4
            end = offset + 4 * words
            if end > n:
                raise RTPParseError("RTP header extension runs past the end of the packet")
            ext_data = bytes(view[offset:end])
            offset = end
        end = n
        padding = 0
        if b0 & 0x20:
            padding = view[n - 1]
            if padding == 0 or padding > n - offset:
                raise RTPParseError(f"RTP padding count {padding} is invalid")
            end = n - padding
        return cls(
            b1 & 0x7F,
            seq,
            ts,
            ssrc,
            bytes(view[offset:end]),
            bool(b1 & 0x80),
            csrc,
            ext_profile,
            ext_data,
            padding,
        )

    def serialize(self) -> bytes:
        """Return the packet's wire form; raise ValueError if a field is out of range."""
        cc = len(self.csrc)
        if cc > 15:
            raise ValueError("at most 15 CSRC identifiers fit in an RTP header")
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range 0-127")
        if not 0 <= self.padding <= 255:
            raise ValueError(f"padding {self.padding} out of range 0-255")
        b0 = (RTP_VERSION << 6) | cc
        if self.padding:
            b0 |= 0x20
        if self.extension_profile is not None:
            b0 |= 0x10
        b1 = self.payload_type | (0x80 if self.marker else 0)
        parts = [
            _RTP_HEADER.pack(
                b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF
            )
        ]
        if cc:
            parts.append(struct.pack(f"!{cc}I", *self.csrc))
        if self.extension_profile is not None:
            words, rest = divmod(len(self.extension_data), 4)
            if rest or words > 0xFFFF:
                raise ValueError("RTP header extension length must be a multiple of 4 octets")
            parts.append(_RTP_EXT_HEADER.pack(self.extension_profile & 0xFFFF, words))
            parts.append(self.extension_data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)

    __bytes__ = serialize


def ntp_timestamp(unix_seconds: float) -> tuple[int, int]:
    """Return the 64-bit NTP timestamp (msw, lsw) for a Unix time (RFC 3550 §4)."""
    seconds = unix_seconds + NTP_UNIX_OFFSET
    msw = int(seconds)
    lsw = int((seconds - msw) * (1 << 32)) & 0xFFFFFFFF
    return msw & 0xFFFFFFFF, lsw


def ntp_middle32(msw: int, lsw: int) -> int:
    """The middle 32 bits of an NTP timestamp, as used in LSR (RFC 3550 §6.4.1)."""
    return ((msw & 0xFFFF) << 16) | (lsw >> 16)


@dataclass(slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1).

    ``cumulative_lost`` is a signed 24-bit value (duplicates can make it
    negative); ``jitter`` is in timestamp units; ``lsr``/``dlsr`` are the
    middle 32 bits of the last SR's NTP time and the delay since it in units
    of 1/65536 s.
    """

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    def serialize(self) -> bytes:
        """The 24-octet wire form; cumulative_lost is clamped to 24 bits signed."""
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc & 0xFFFFFFFF,
            ((self.fraction_lost & 0xFF) << 24) | lost,
            self.highest_sequence & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )

    @classmethod
    def parse_from(cls, data: bytes | memoryview, offset: int) -> ReportBlock:
        """Parse the block at *offset* (the caller checked that 24 octets are there)."""
        ssrc, word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        lost = word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, word >> 24, lost, highest, jitter, lsr, dlsr)


def _rtcp_header(count: int, packet_type: int, body_len: int) -> bytes:
    if body_len % 4:
        raise ValueError("RTCP packet body must be a multiple of 4 octets")
    return _RTCP_HEADER.pack((RTP_VERSION << 6) | count, packet_type, body_len // 4)


def _parse_blocks(body: memoryview, offset: int, count: int) -> list[ReportBlock]:
    if offset + 24 * count > len(body):
        raise RTPParseError("RTCP report blocks run past the end of the packet")
    return [ReportBlock.parse_from(body, offset + 24 * i) for i in range(count)]


@dataclass(slots=True)
class SenderReport:
    """RTCP SR, packet type 200 (RFC 3550 §6.4.1)."""

    ssrc: int
    ntp_msw: int = 0
    ntp_lsw: int = 0
    rtp_timestamp: int = 0
    packet_count: int = 0
    octet_count: int = 0
    reports: list[ReportBlock] = field(default_factory=list)

    packet_type = RTCP_SR

    def serialize(self) -> bytes:
        """Wire form of the SR (at most 31 report blocks, RFC 3550 §6.4.1 RC field)."""
        if len(self.reports) > 31:
            raise ValueError("at most 31 report blocks fit in one SR")
        body = _SR_INFO.pack(
            self.ssrc & 0xFFFFFFFF,
            self.ntp_msw & 0xFFFFFFFF,
            self.ntp_lsw & 0xFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        ) + b"".join(r.serialize() for r in self.reports)
        return _rtcp_header(len(self.reports), RTCP_SR, len(body)) + body

    __bytes__ = serialize

    @classmethod
    def _parse_body(cls, count: int, body: memoryview) -> SenderReport:
        if len(body) < 24:
            raise RTPParseError("RTCP SR too short")
        ssrc, msw, lsw, ts, packets, octets = _SR_INFO.unpack_from(body, 0)
        return cls(ssrc, msw, lsw, ts, packets, octets, _parse_blocks(body, 24, count))


@dataclass(slots=True)
class ReceiverReport:
    """RTCP RR, packet type 201 (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)

    packet_type = RTCP_RR

    def serialize(self) -> bytes:
        """Wire form of the RR (at most 31 report blocks)."""
        if len(self.reports) > 31:
            raise ValueError("at most 31 report blocks fit in one RR")
        body = _U32.pack(self.ssrc & 0xFFFFFFFF) + b"".join(r.serialize() for r in self.reports)
        return _rtcp_header(len(self.reports), RTCP_RR, len(body)) + body

    __bytes__ = serialize

    @classmethod
    def _parse_body(cls, count: int, body: memoryview) -> ReceiverReport:
        if len(body) < 4:
            raise RTPParseError("RTCP RR too short")
        (ssrc,) = _U32.unpack_from(body, 0)
        return cls(ssrc, _parse_blocks(body, 4, count))


@dataclass(slots=True)
class SourceDescription:
    """RTCP SDES, packet type 202 (RFC 3550 §6.5), one CNAME per chunk.

    ``chunks`` maps SSRC to CNAME.  Every compound RTCP packet must carry an
    SDES CNAME (RFC 3550 §6.1); other SDES items are skipped when parsing.
    """

    chunks: dict[int, str] = field(default_factory=dict)

    packet_type = RTCP_SDES

    def serialize(self) -> bytes:
        """Wire form: each chunk is SSRC, CNAME item, END, padded to 32 bits."""
        if len(self.chunks) > 31:
            raise ValueError("at most 31 SDES chunks fit in one packet")
        body = bytearray()
        for ssrc, cname in self.chunks.items():
            text = cname.encode("utf-8")
            if len(text) > 255:
                raise ValueError("SDES CNAME longer than 255 octets")
            chunk = _U32.pack(ssrc & 0xFFFFFFFF) + bytes((1, len(text))) + text
            chunk += bytes(4 - len(chunk) % 4)  # END item plus padding (RFC 3550 §6.5)
            body += chunk
        return _rtcp_header(len(self.chunks), RTCP_SDES, len(body)) + bytes(body)

    __bytes__ = serialize

    @classmethod
    def _parse_body(cls, count: int, body: memoryview) -> SourceDescription:
        chunks: dict[int, str] = {}
        offset = 0
        n = len(body)
        for _ in range(count):
            if offset + 4 > n:
                raise RTPParseError("RTCP SDES chunk truncated")
            (ssrc,) = _U32.unpack_from(body, offset)
            offset += 4
            while True:
                if offset >= n:
                    raise RTPParseError("RTCP SDES item list not terminated")
                item = body[offset]
                if item == 0:
                    offset = (offset + 4) & ~3
                    break
                if offset + 2 > n or offset + 2 + body[offset + 1] > n:
                    raise RTPParseError("RTCP SDES item truncated")
                length = body[offset + 1]
                if item == 1:
                    chunks[ssrc] = bytes(body[offset + 2 : offset + 2 + length]).decode(
                        "utf-8", "replace"
                    )
                offset += 2 + length
        return cls(chunks)


@dataclass(slots=True)
class Goodbye:
    """RTCP BYE, packet type 203 (RFC 3550 §6.6)."""

    sources: list[int] = field(default_factory=list)
    reason: str = ""

    packet_type = RTCP_BYE

    def serialize(self) -> bytes:
        """Wire form: the SSRC list, then the optional reason padded to 32 bits."""
        if len(self.sources) > 31:
            raise ValueError("at most 31 sources fit in one BYE")
        body = b"".join(_U32.pack(s & 0xFFFFFFFF) for s in self.sources)
        if self.reason:
            text = self.reason.encode("utf-8")[:255]
            extra = bytes((len(text),)) + text
            body += extra + bytes(-len(extra) % 4)
        return _rtcp_header(len(self.sources), RTCP_BYE, len(body)) + body

    __bytes__ = serialize

    @classmethod
    def _parse_body(cls, count: int, body: memoryview) -> Goodbye:
        if 4 * count > len(body):
            raise RTPParseError("RTCP BYE source list truncated")
        sources = list(struct.unpack_from(f"!{count}I", body, 0))
        reason = ""
        offset = 4 * count
        if offset < len(body):
            length = body[offset]
            if offset + 1 + length > len(body):
                raise RTPParseError("RTCP BYE reason truncated")
            reason = bytes(body[offset + 1 : offset + 1 + length]).decode("utf-8", "replace")
        return cls(sources, reason)


@dataclass(slots=True)
class RTCPPacket:
    """An RTCP packet of a type we do not interpret (APP, feedback, XR ...)."""

    packet_type: int
    count: int
    body: bytes

    def serialize(self) -> bytes:
        """Wire form (header plus the body as given)."""
        return _rtcp_header(self.count & 0x1F, self.packet_type, len(self.body)) + self.body

    __bytes__ = serialize


RTCPItem = SenderReport | ReceiverReport | SourceDescription | Goodbye | RTCPPacket

_RTCP_TYPES = {
    RTCP_SR: SenderReport,
    RTCP_RR: ReceiverReport,
    RTCP_SDES: SourceDescription,
    RTCP_BYE: Goodbye,
}


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RTCPItem]:
    """Parse a compound RTCP packet (RFC 3550 §6.1) into its packets.

    Validity checks of RFC 3550 §A.2: version 2 on every packet, the first is
    an SR or RR, the lengths add up to the datagram length, padding only on the
    last packet.  Raises only :class:`RTPParseError`.
    """
    view = memoryview(data)
    n = len(view)
    if n < 4:
        raise RTPParseError("RTCP packet too short")
    items: list[RTCPItem] = []
    offset = 0
    while offset < n:
        if offset + 4 > n:
            raise RTPParseError("RTCP header truncated")
        b0, packet_type, words = _RTCP_HEADER.unpack_from(view, offset)
        if b0 >> 6 != RTP_VERSION:
            raise RTPParseError(f"RTCP version {b0 >> 6} is not 2")
        end = offset + 4 + 4 * words
        if end > n:
            raise RTPParseError("RTCP length runs past the end of the datagram")
        body = view[offset + 4 : end]
        if b0 & 0x20:
            if end != n:
                raise RTPParseError("RTCP padding on a packet that is not the last")
            pad = body[-1] if len(body) else 0
            if pad == 0 or pad > len(body):
                raise RTPParseError(f"RTCP padding count {pad} is invalid")
            body = body[: len(body) - pad]
        if not items and packet_type not in (RTCP_SR, RTCP_RR):
            raise RTPParseError("compound RTCP packet must start with SR or RR")
        count = b0 & 0x1F
        kind = _RTCP_TYPES.get(packet_type)
        if kind is None:
            items.append(RTCPPacket(packet_type, count, bytes(body)))
        else:
            items.append(kind._parse_body(count, body))
        offset = end
    return items


def build_rtcp(*packets: RTCPItem) -> bytes:
    """Concatenate RTCP packets into one compound packet (RFC 3550 §6.1)."""
    return b"".join(p.serialize() for p in packets)


class RTPStats:
    """Receiver statistics for one source (RFC 3550 Appendix A.1, A.3, A.8).

    Feed every received packet with :meth:`update`; :meth:`report_block`
    produces the RR/SR report block and advances the interval counters used
    for the fraction lost.  Sequence numbers are extended across wraps; a
    jump of more than ``MAX_DROPOUT`` is accepted only when the next packet
    confirms it (A.1, without the probation phase).
    """

    MAX_DROPOUT = 3000
    MAX_MISORDER = 100

    # One per received source of every call: slots keep it small (issue 16).
    __slots__ = (
        "_bad_seq", "_expected_prior", "_initialised", "_last_sr", "_last_sr_arrival",
        "_received_prior", "_transit", "base_seq", "clock_rate", "cycles", "jitter",
        "max_seq", "received", "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int = 8000) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.jitter = 0.0
        self._bad_seq = RTP_SEQ_MOD + 1
        self._initialised = False
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: int | None = None
        self._last_sr: int = 0
        self._last_sr_arrival: float | None = None

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._transit = None
        self.jitter = 0.0

    def update(self, sequence: int, timestamp: int, arrival: float) -> bool:
        """Account one packet received at *arrival* seconds; return False if it was discarded.

        A packet is discarded (not counted) only on an unconfirmed large
        sequence jump (RFC 3550 §A.1).  Jitter uses the A.8 estimator with
        arrival time converted to timestamp units.
        """
        seq = sequence & 0xFFFF
        if not self._initialised:
            self._initialised = True
            self._init_seq(seq)
        else:
            udelta = (seq - self.max_seq) & 0xFFFF
            if udelta < self.MAX_DROPOUT:
                if seq < self.max_seq:
                    self.cycles += RTP_SEQ_MOD
                self.max_seq = seq
            elif udelta <= RTP_SEQ_MOD - self.MAX_MISORDER:
                if seq == self._bad_seq:
                    self._init_seq(seq)
                else:
                    self._bad_seq = (seq + 1) & 0xFFFF
                    return False
        self.received += 1
        transit = int(arrival * self.clock_rate) - timestamp
        if self._transit is not None:
            d = (transit - self._transit) % _TS_MOD
            if d >= _TS_MOD // 2:
                d = _TS_MOD - d
            self.jitter += (d - self.jitter) / 16.0
        self._transit = transit
        return True

    @property
    def extended_max(self) -> int:
        """Highest sequence number received, extended with the wrap count (A.1)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected so far (A.3)."""
        return self.extended_max - self.base_seq + 1 if self._initialised else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost, clamped to 24 bits signed (A.3)."""
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    def sender_report_received(self, ntp_msw: int, ntp_lsw: int, arrival: float) -> None:
        """Remember an SR from this source, for LSR/DLSR in our next report (§6.4.1)."""
        self._last_sr = ntp_middle32(ntp_msw, ntp_lsw)
        self._last_sr_arrival = arrival

    def report_block(self, now: float) -> ReportBlock:
        """Build the report block for this source and start a new interval (A.3)."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self.received - self._received_prior
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = 0
        if self._last_sr_arrival is not None:
            dlsr = max(0, int((now - self._last_sr_arrival) * 65536)) & 0xFFFFFFFF
        return ReportBlock(
            self.ssrc,
            fraction,
            self.lost,
            self.extended_max & 0xFFFFFFFF,
            int(self.jitter),
            self._last_sr,
            dlsr,
        )
