"""Reliable provisional responses (RFC 3262): the RSeq / RAck bookkeeping of both roles.

:class:`ReliableProvisionals` is the UAS side of one INVITE: it numbers the 18x the
dialog sends reliably (``Require: 100rel``, ``RSeq``), retransmits the unacknowledged one
at T1, 2*T1, 4*T1 ... until its PRACK (§3), gives up after 64*T1, and matches PRACKs by
their ``RAck``.  :class:`ProvisionalSequence` is the UAC side: which reliable 18x to PRACK
(the next RSeq of each early dialog, §4).  :func:`prack_for` builds that PRACK.  Time only
through the :class:`~voiptwisted.sip.transaction.Timers` given; no I/O.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from voiptwisted.sip.message import Request, Response

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from voiptwisted.sip.transaction import Timers

__all__ = [
    "MAX_EARLY_DIALOGS",
    "MAX_QUEUED",
    "OPTION_TAG",
    "ProvisionalSequence",
    "ReliableProvisionals",
    "parse_rack",
    "parse_rseq",
    "prack_for",
    "requires_reliable",
    "wants_reliable",
]

#: The option tag of RFC 3262 (§6).
OPTION_TAG = "100rel"
#: Largest RSeq / RAck number (RFC 3262 §7.1: 1*DIGIT, up to 2**32 - 1).
_MAX_NUMBER = 2**32 - 1
#: Reliable 18x the application may queue behind an unacknowledged one (§3: one at a time).
MAX_QUEUED = 8
#: Early dialogs (forks, by To tag) whose RSeq a UAC call tracks; later forks are not PRACKed.
MAX_EARLY_DIALOGS = 16


def _number(text: str) -> int | None:
    """A 1*DIGIT value of at most ten digits in 1..2**32-1, else None (no unbounded int())."""
    if not 0 < len(text) <= 10 or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if 0 < value <= _MAX_NUMBER else None


def parse_rseq(value: str | None) -> int | None:
    """The number of an ``RSeq`` header (RFC 3262 §7.1), or None when absent or malformed."""
    return None if value is None else _number(value.strip(" \t"))


def parse_rack(value: str | None) -> tuple[int, int, str] | None:
    """``(response-num, CSeq-num, method)`` of an ``RAck`` header (RFC 3262 §7.2), or None."""
    if value is None:
        return None
    parts = value.split()
    if len(parts) != 3:
        return None
    rseq, cseq = _number(parts[0]), _number(parts[1])
    if rseq is None or cseq is None or not parts[2].isascii() or not parts[2].isalpha():
        return None
    return rseq, cseq, parts[2].upper()


def _tags(message: Request | Response, name: str) -> set[str]:
    return {tag.strip().lower() for tag in message.headers.getlist(name)}


def requires_reliable(message: Request | Response) -> bool:
    """Whether *message* has ``Require: 100rel`` (RFC 3262 §3, §4)."""
    return OPTION_TAG in _tags(message, "Require")


def wants_reliable(invite: Request, when_supported: bool) -> bool:
    """Whether our 18x to *invite* go reliably (RFC 3262 §3): always when it requires
    ``100rel``; when it only lists it in ``Supported``, as our policy *when_supported* says."""
    if requires_reliable(invite):
        return True
    return when_supported and OPTION_TAG in _tags(invite, "Supported")


class ReliableProvisionals:
    """UAS side of RFC 3262 §3 for one INVITE server transaction.

    :meth:`send` stamps a 101-199 response with ``Require: 100rel`` and the next ``RSeq``
    (the first one random in 1..2**31-1) and hands it to *transmit* (the INVITE server
    transaction), again at T1, 2*T1, 4*T1 ... until :meth:`acknowledge` matches its PRACK.
    One is outstanding at a time (§3: "MUST NOT send a second reliable provisional response
    until the first is acknowledged"); later ones wait their turn, at most
    :data:`MAX_QUEUED`.  If one goes unacknowledged for 64*T1, *on_timeout* is called (the
    dialog answers the INVITE 5xx).  *transmit* returning False (the transaction has its
    final response) stops the retransmissions.
    """

    def __init__(
        self,
        invite: Request,
        *,
        timers: Timers,
        t1: float,
        transmit: Callable[[Response], bool],
        on_timeout: Callable[[], None],
    ) -> None:
        self._cseq = invite.cseq[0]
        self._method = invite.method
        self._timers = timers
        self._t1 = t1
        self._transmit = transmit
        self._on_timeout = on_timeout
        #: The RSeq the next reliable 18x gets (§3: the first one random in 1..2**31-1).
        self.next_rseq = secrets.randbelow(2**31 - 1) + 1
        #: The reliable 18x sent and not yet acknowledged, or None.
        self.pending: Response | None = None
        self._queue: deque[Response] = deque()
        self._interval = t1
        self._retransmit_timer: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = None
        #: Whether a reliable 18x with a body (SDP) has been sent.
        self.sdp_sent = False

    @property
    def sdp_unacknowledged(self) -> bool:
        """Whether a reliable 18x with a body (SDP) waits for its PRACK, sent or queued (§3:
        no 2xx to the INVITE until those are acknowledged)."""
        if self.pending is not None and self.pending.body:
            return True
        return any(response.body for response in self._queue)

    def send(self, response: Response) -> bool:
        """Send *response* (a 101-199 to the INVITE) reliably, now or once the outstanding
        one is acknowledged.  False when the queue is full (the response is not sent)."""
        if not 100 < response.status_code < 200:
            raise ValueError(f"only 101-199 go reliably, not {response.status_code}")
        if self.pending is None:
            self._start(response)
            return True
        if len(self._queue) >= MAX_QUEUED:
            return False
        self._queue.append(response)
        return True

    def _start(self, response: Response) -> None:
        response.headers["Require"] = OPTION_TAG
        response.headers["RSeq"] = str(self.next_rseq)
        self.next_rseq += 1
        self.pending = response
        self.sdp_sent = self.sdp_sent or bool(response.body)
        if not self._transmit(response):
            self.stop()
            return
        self._interval = self._t1
        self._retransmit_timer = self._timers.call_later(self._interval, self._retransmit)
        self._deadline = self._timers.call_later(64 * self._t1, self._timed_out)

    def _retransmit(self) -> None:
        """§3: the interval starts at T1 and doubles for each retransmission."""
        self._retransmit_timer = None
        if self.pending is None or not self._transmit(self.pending):
            self.stop()
            return
        self._interval *= 2
        self._retransmit_timer = self._timers.call_later(self._interval, self._retransmit)

    def _timed_out(self) -> None:
        self._deadline = None
        self.stop()
        self._on_timeout()

    def _cancel_timers(self) -> None:
        self._timers.cancel(self._retransmit_timer)
        self._timers.cancel(self._deadline)
        self._retransmit_timer = self._deadline = None

    def stop(self) -> None:
        """No more (re)transmissions: the INVITE has its final response or the call ended.
        The outstanding response still matches a late PRACK (:meth:`acknowledge`)."""
        self._cancel_timers()
        self._queue.clear()

    def acknowledge(self, rack: tuple[int, int, str]) -> Response | None:
        """A PRACK's ``RAck``: the reliable 18x it acknowledges, or None when it matches no
        unacknowledged one (§3: the PRACK then gets 481).  The next queued 18x goes out."""
        pending = self.pending
        if pending is None or rack != (int(pending.headers["RSeq"]), self._cseq, self._method):
            return None
        self._cancel_timers()
        self.pending = None
        if self._queue:
            self._start(self._queue.popleft())
        return pending


class ProvisionalSequence:
    """UAC side of RFC 3262 §4 for one INVITE: which reliable 18x to PRACK.

    Per early dialog (the response's To tag): the first reliable 18x sets the expected
    sequence; a later one is PRACKed only if its RSeq is exactly one higher.  Lower or equal
    is a retransmission, higher is out of order: neither is PRACKed nor processed further.
    At most :data:`MAX_EARLY_DIALOGS` early dialogs are tracked (forks beyond get no PRACK).
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def accept(self, response: Response) -> int | None:
        """The RSeq to PRACK for the reliable *response*, or None to ignore it."""
        rseq = parse_rseq(response.headers.get("RSeq"))
        if rseq is None:
            return None
        tag = response.remote_tag or ""
        last = self._last.get(tag)
        if last is None:
            if len(self._last) >= MAX_EARLY_DIALOGS:
                return None
        elif rseq != last + 1:
            return None
        self._last[tag] = rseq
        return rseq

    def clear(self) -> None:
        """A new INVITE (auth retry, redirect): its responses start new sequences."""
        self._last.clear()


def prack_for(invite: Request, response: Response, rseq: int, cseq: int) -> Request:
    """The PRACK for the reliable *response* to *invite* (RFC 3262 §4, §7.2).

    It is a request in the early dialog *response* created (RFC 3261 §12.1.2): Request-URI
    the response's Contact (else the INVITE's), Route the reversed Record-Route set, To with
    the response's tag, ``CSeq: cseq PRACK`` and ``RAck: rseq invite-cseq INVITE``.  Loose
    routing is assumed (every Route is kept as a Route).  Raises ``SIPParseError`` or
    ``ValueError`` when the response's Contact or Record-Route cannot be used.
    """
    contacts = response.contact
    target = contacts[0].uri if contacts else invite.uri
    headers: list[tuple[str, str]] = [
        ("Route", route) for route in reversed(response.headers.getlist("Record-Route"))
    ]
    headers += [
        ("Max-Forwards", "70"),
        ("From", invite.headers["From"]),
        ("To", response.headers["To"]),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{cseq} PRACK"),
        ("RAck", f"{rseq} {invite.cseq[0]} {invite.method}"),
    ]
    return Request("PRACK", target, headers)
