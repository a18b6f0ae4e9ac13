"""Which address a call's RTP is accepted from: strict symmetric-RTP latching (sans-I/O).

Plain RTP has no authentication, so anyone who can reach the call's port can
inject audio or, with naive latching, redirect the stream to themselves
(issue 14 finding 10).  :class:`SourceLatch` decides per packet whether its
source is the call's peer:

* The address in the peer's SDP (``c=``/``m=``) is trusted first: it came
  through the signalling.  Its first packet latches at once.
* Another address latches only after a *probation* run (RFC 3550 §8.2 and
  Appendix A.1 source validation, ``MIN_SEQUENTIAL``): ``probation``
  consecutive sequence numbers of one SSRC, and only when no other unlatched
  source is competing.  That keeps symmetric RTP for a peer behind NAT
  (RFC 4961 §4: its packets come from its public address, not its SDP one).
* Once latched, another address takes over only after the latched one has
  been silent for ``relatch_after`` seconds *and* the new one completed a
  probation run, with no other source competing.  The SDP address needs only
  the probation run to win back the stream from a source learned by probation
  (a sprayer that got in before the real peer is displaced by it).

Everything else is dropped by the caller and counted.  Payload types are
checked by the caller before :meth:`SourceLatch.accept` (only negotiated ones
count towards a run).  Time is an argument, so this is tested without a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROBATION", "RELATCH_AFTER", "SourceLatch"]

Address = tuple[str, int]

#: Consecutive packets of one SSRC a source other than the SDP address must send
#: before it is latched to (RFC 3550 Appendix A.1 uses MIN_SEQUENTIAL = 2).
PROBATION = 3
#: Seconds the latched source must be silent before another source may take over.
RELATCH_AFTER = 5.0
#: Unlatched sources tracked at once (a spray from many addresses evicts the oldest).
MAX_CANDIDATES = 16
#: Seconds within which another candidate's packet counts as competing.
COMPETING_WITHIN = 1.0


@dataclass(slots=True)
class _Candidate:
    """A source on probation: its SSRC, the sequence number it should send next, its run."""

    ssrc: int
    next_sequence: int
    run: int
    last_seen: float


class SourceLatch:
    """The per-call source-validation state; :meth:`accept` is called for every RTP packet."""

    __slots__ = (
        "_candidates", "expected", "last_seen", "latches", "probation", "relatch_after",
        "source",
    )

    def __init__(
        self, *, probation: int = PROBATION, relatch_after: float = RELATCH_AFTER
    ) -> None:
        if probation < 1:
            raise ValueError("probation must be at least 1 packet")
        if relatch_after < 0:
            raise ValueError("relatch_after must not be negative")
        self.probation = probation
        self.relatch_after = relatch_after
        #: The address the peer's SDP gave (where we send until latched), or None.
        self.expected: Address | None = None
        #: The address packets are accepted from, once latched.
        self.source: Address | None = None
        #: When the latched source last sent an accepted packet.
        self.last_seen = 0.0
        #: How many times a source was latched (the first latch included).
        self.latches = 0
        self._candidates: dict[Address, _Candidate] = {}

    @property
    def latched(self) -> bool:
        return self.source is not None

    def expect(self, address: Address | None) -> None:
        """The SDP address changed (a new offer/answer): start over, unless it is where we
        are latched already (a session refresh keeps a NATed peer's public address)."""
        if address is not None and address == self.source:
            self.expected = address
            return
        self.expected = address
        self.source = None
        self._candidates.clear()

    def accept(self, address: Address, ssrc: int, sequence: int, now: float) -> bool:
        """True if a packet from *address* (SSRC, sequence number) belongs to the call.

        Latches or re-latches as the module docstring describes; False means drop it.
        """
        source = self.source
        if address == source:
            self.last_seen = now
            return True
        if source is None and address == self.expected:
            self._latch(address, now)
            return True
        run = self._probe(address, ssrc, sequence, now)
        if run < self.probation:
            return False
        if address != self.expected:
            if source is not None and now - self.last_seen < self.relatch_after:
                return False
            if self._competing(address, now):
                return False
        self._latch(address, now)
        return True

    def _latch(self, address: Address, now: float) -> None:
        self.source = address
        self.last_seen = now
        self.latches += 1
        self._candidates.clear()

    def _probe(self, address: Address, ssrc: int, sequence: int, now: float) -> int:
        """Record a packet of an unlatched source; return the length of its current run."""
        candidate = self._candidates.get(address)
        if candidate is None:
            if len(self._candidates) >= MAX_CANDIDATES:
                oldest = min(self._candidates, key=lambda a: self._candidates[a].last_seen)
                del self._candidates[oldest]
            candidate = self._candidates[address] = _Candidate(ssrc, 0, 0, now)
        if candidate.ssrc == ssrc and candidate.run and sequence == candidate.next_sequence:
            candidate.run += 1
        else:
            candidate.ssrc = ssrc
            candidate.run = 1
        candidate.next_sequence = (sequence + 1) & 0xFFFF
        candidate.last_seen = now
        return candidate.run

    def _competing(self, address: Address, now: float) -> bool:
        """Another unlatched source sent recently: latch to neither (a NATed peer racing a
        sprayer is better left on its SDP address than handed to the wrong one)."""
        return any(
            other != address and now - candidate.last_seen < COMPETING_WITHIN
            for other, candidate in self._candidates.items()
        )
