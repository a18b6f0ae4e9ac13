"""Session timers (RFC 4028): a call both ends keep alive by refreshing it in time.

A call whose far end vanished without a BYE (a crashed PBX, a NAT that forgot the
flow) would otherwise hold its media and a call slot for ever.  RFC 4028 lets the two
user agents agree on an interval (``Session-Expires``, at least the ``Min-SE`` of each
side, never below 90 s) and on which of them refreshes the session (``refresher=uac``
or ``uas``) with a re-INVITE or UPDATE before it runs out; the other one ends the call
with BYE when no refresh came (§10).

:class:`SessionTimer` is the negotiation of one dialog, without I/O and without a
clock: the dialog asks it for the headers of its requests and 2xx responses, tells it
each 2xx that refreshed the session, and reads from it when to refresh and when the
session expires, scheduling those on its own injected clock.  Parsing is one split and
the linear :func:`~voiptwisted.sip.headers.parse_params`; every number is bounded.
"""

from __future__ import annotations

from typing import NamedTuple

from twisted.logger import Logger

from voiptwisted.sip.headers import SIPParseError, delta_seconds, parse_params
from voiptwisted.sip.message import Message, Request, Response

__all__ = [
    "MAX_SESSION_EXPIRES",
    "MIN_SE",
    "SESSION_EXPIRES",
    "SessionExpires",
    "SessionTimer",
    "parse_min_se",
    "parse_session_expires",
    "session_interval_too_small",
]

log = Logger()

#: The smallest session interval anybody may ask for (RFC 4028 §4, §5: Min-SE MUST NOT
#: be below 90 s); ours, sent in every 422 and request.
MIN_SE = 90
#: The session interval we ask for by default (RFC 4028 §4 recommends 1800 s).
SESSION_EXPIRES = 1800
#: The longest session interval one may configure (a day).
MAX_SESSION_EXPIRES = 86400
#: The option tag of the extension (RFC 4028 §3).
OPTION_TAG = "timer"
#: The reason phrase of 422 (RFC 4028 §6).
TOO_SMALL_PHRASE = "Session Interval Too Small"


class SessionExpires(NamedTuple):
    """A ``Session-Expires`` value (RFC 4028 §4): seconds and ``refresher`` (or None)."""

    seconds: int
    refresher: str | None


def _delta_with_params(value: str, what: str) -> tuple[int, dict[str, str | None]]:
    """``delta-seconds *( SEMI generic-param )`` in one pass: the number and the params."""
    head, semi, rest = value.partition(";")
    seconds = delta_seconds(head.strip(" \t"), what)
    return seconds, parse_params(semi + rest) if semi else {}


def parse_session_expires(value: str) -> SessionExpires:
    """Parse ``Session-Expires`` (RFC 4028 §4: ``delta-seconds *(SEMI se-params)``).

    ``refresher`` must be ``uac`` or ``uas`` (case-insensitive) when present; anything
    else is a :class:`~voiptwisted.sip.headers.SIPParseError` (a 400 for a request).
    """
    seconds, params = _delta_with_params(value, "Session-Expires")
    refresher = params.get("refresher")
    if refresher is not None:
        refresher = refresher.lower()
        if refresher not in ("uac", "uas"):
            raise SIPParseError(f"invalid Session-Expires refresher {refresher[:20]!r}")
    return SessionExpires(seconds, refresher)


def parse_min_se(value: str) -> int:
    """Parse ``Min-SE`` (RFC 4028 §5: ``delta-seconds *(SEMI generic-param)``)."""
    return _delta_with_params(value, "Min-SE")[0]


def _session_expires(message: Message) -> SessionExpires | None:
    value = message.headers.get("Session-Expires")
    return None if value is None else parse_session_expires(value)


def _min_se(message: Message) -> int | None:
    value = message.headers.get("Min-SE")
    return None if value is None else parse_min_se(value)


def _supports_timer(message: Message) -> bool:
    """The message's Supported or Require lists ``timer`` (RFC 4028 §7.1, §9)."""
    return any(
        tag.lower() == OPTION_TAG
        for name in ("Supported", "Require")
        for tag in message.headers.getlist(name)
    )


def session_interval_too_small(request: Request, min_se: int = MIN_SE) -> int | None:
    """The Min-SE to answer *request* with in a 422, or None when its interval is fine.

    RFC 4028 §9 (and §6): an INVITE or UPDATE asking for a ``Session-Expires`` below our
    minimum is refused with 422 and our ``Min-SE``, so its sender retries with at least
    that.  A malformed ``Session-Expires`` or ``Min-SE`` raises ``SIPParseError`` (400).
    """
    requested = _session_expires(request)
    _min_se(request)
    if requested is not None and requested.seconds < min_se:
        return min_se
    return None


class SessionTimer:
    """The session timer of one dialog (RFC 4028): what we ask for, what was agreed.

    *preferred* is the interval we ask for and the longest we accept (we may reduce a
    longer one, §9); ``min_se`` is the smallest we may ask for, ours or a higher one a
    422 or the peer's ``Min-SE`` told us.  ``interval`` is None until a 2xx agreed on one,
    then the session interval in seconds; ``we_refresh`` says whether we are the
    refresher.  The dialog schedules :attr:`refresh_after` and :attr:`expires_after`
    from each refreshing 2xx.
    """

    def __init__(self, preferred: int = SESSION_EXPIRES) -> None:
        if preferred < MIN_SE:
            raise ValueError(f"session interval must be at least {MIN_SE} s (RFC 4028 §4)")
        self.preferred = preferred
        self.min_se = MIN_SE
        self.interval: int | None = None
        self.we_refresh = False
        self._retried = False

    def __repr__(self) -> str:
        who = "us" if self.we_refresh else "them"
        return f"<SessionTimer interval={self.interval} refresher={who}>"

    # -- requests we send (RFC 4028 §7) ----------------------------------------------------

    def request_headers(self) -> list[tuple[str, str]]:
        """``Session-Expires`` and ``Min-SE`` for our INVITE, re-INVITE or UPDATE.

        §7.1: the first INVITE asks for our interval (at least every Min-SE we know) and
        leaves the refresher to the answerer; §7.4: a refresh keeps the agreed interval
        and names the refresher as it is (``uac`` when that is us, the request's sender);
        the Min-SE we know goes in each (§7.1, §7.4 after a 422).
        """
        if self.interval is None:
            value = str(max(self.preferred, self.min_se))
        else:
            who = "uac" if self.we_refresh else "uas"
            value = f"{max(self.interval, self.min_se)};refresher={who}"
        return [("Session-Expires", value), ("Min-SE", str(self.min_se))]

    def retry_after_422(self, response: Response) -> bool:
        """A 422 to our request (RFC 4028 §7.4): raise the interval to its Min-SE and say
        whether to send the request again (once, and only when the Min-SE is higher than
        what we asked for; a malformed or missing Min-SE ends it)."""
        try:
            floor = _min_se(response)
        except SIPParseError:
            floor = None
        asked = max(self.interval or self.preferred, self.min_se)
        if self._retried or floor is None or floor <= asked:
            return False
        self._retried = True
        self.min_se = floor
        if self.interval is not None:
            self.interval = floor
        self.preferred = max(self.preferred, floor)
        return True

    def answered(self, response: Response) -> None:
        """A 2xx to our INVITE, re-INVITE or UPDATE refreshed the session (RFC 4028 §7.2).

        With a ``Session-Expires`` in the 2xx its interval and refresher apply (a missing
        refresher is taken as ``uac``, us: a refresh too many does no harm, one too few
        ends the call).  Without one the peer does not do session timers and, since we
        asked for one, we refresh at the interval we asked for.  An interval below our
        Min-SE (which a 2xx must not carry) is raised to it, so a peer cannot make us
        refresh in a loop.
        """
        try:
            agreed = _session_expires(response)
        except SIPParseError as exc:
            log.info("unusable Session-Expires in 2xx ({exc}): we refresh", exc=exc)
            agreed = None
        if agreed is None:
            self.interval = max(self.interval or self.preferred, self.min_se)
            self.we_refresh = True
            return
        self.interval = max(agreed.seconds, self.min_se)
        self.we_refresh = agreed.refresher != "uas"

    # -- requests we answer (RFC 4028 §9) ----------------------------------------------------

    def answer(self, request: Request) -> list[tuple[str, str]]:
        """Agree on the session timer for our 2xx to *request* (an INVITE, re-INVITE or
        UPDATE) and return that 2xx's ``Session-Expires`` (and ``Require: timer``).

        RFC 4028 §9: the interval is the one asked for, reduced to ours when longer but
        never below the request's ``Min-SE`` or 90 s, and never raised; without one we
        ask for ours (at least the request's Min-SE).  The refresher is the one the request
        named; else the answerer (us), which it must be when the peer does not support
        timers.  ``Require: timer`` goes with it when the peer supports timers (§9: MUST
        when the refresher is ``uac``, SHOULD otherwise).  Call
        :func:`session_interval_too_small` first: this one assumes the values parse.
        """
        requested = _session_expires(request)
        floor = max(MIN_SE, _min_se(request) or 0)
        self.min_se = max(self.min_se, floor)
        supported = _supports_timer(request)
        ours = max(self.interval or self.preferred, floor)
        if requested is None:
            seconds, refresher = ours, "uas"
        else:
            seconds = max(min(requested.seconds, ours), floor)
            refresher = requested.refresher if supported and requested.refresher else "uas"
        self.interval = seconds
        self.we_refresh = refresher == "uas"
        headers = [("Session-Expires", f"{seconds};refresher={refresher}")]
        if supported:
            headers.append(("Require", OPTION_TAG))
        return headers

    # -- when to act (RFC 4028 §10) -----------------------------------------------------------

    @property
    def refresh_after(self) -> float | None:
        """Seconds from a refreshing 2xx to our next refresh: half the interval (§10), or
        None when the peer refreshes or no timer was agreed."""
        if self.interval is None or not self.we_refresh:
            return None
        return self.interval / 2

    @property
    def expires_after(self) -> float | None:
        """Seconds from a refreshing 2xx to the BYE that ends an unrefreshed session.

        RFC 4028 §10: the side that does not refresh sends BYE before the session expires,
        ``min(32, interval / 3)`` seconds early; the refresher's own session ends at the
        full interval (its refresh got no 2xx by then).  None without a timer.
        """
        if self.interval is None:
            return None
        if self.we_refresh:
            return float(self.interval)
        return self.interval - min(32.0, self.interval / 3)
