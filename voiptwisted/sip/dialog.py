"""SIP dialogs (RFC 3261 §12-§15): one call between us and a remote party.

:class:`Dialog` implements :class:`~voiptwisted.interfaces.IDialog` with the
reference library's names.  Subclass it and override :meth:`call_received`
(and optionally :meth:`hangup_received`) to handle inbound calls; create one
with ``Dialog(sip=protocol)`` and call :meth:`dial` for outbound calls.

The dialog is the transaction user (TU) of RFC 3261 §17: it builds requests
and responses, retransmits its 2xx until the ACK arrives (§13.3.1.4), sends
the ACK for a 2xx it receives (§13.2.2.4), keeps the route set, remote target
and CSeq numbers (§12.1, §12.2), and drives the call's media through the
``CallMedia`` contract (``sip.media_class``).  It reaches the stack only
through ``sip``, an :class:`~voiptwisted.interfaces.IUserAgent` (the UA core,
or the protocol standing in for it), and imports no adapter.  Everything
that waits uses ``sip.timers``, so a call that ended leaves no timer behind.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import functools
import secrets
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from voiptwisted.interfaces import IDialog
from voiptwisted.sip.headers import NameAddr, SIPParseError
from voiptwisted.sip.limits import rate_limited_warning
from voiptwisted.sip.message import Request, Response
from voiptwisted.sip.refer import TransferMixin
from voiptwisted.sip.reliable import OPTION_TAG as RELIABLE_TAG
from voiptwisted.sip.reliable import (
    ProvisionalSequence,
    ReliableProvisionals,
    parse_rack,
    prack_for,
    requires_reliable,
    wants_reliable,
)
from voiptwisted.sip.session_timer import (
    OPTION_TAG,
    SESSION_EXPIRES,
    TOO_SMALL_PHRASE,
    SessionTimer,
    session_interval_too_small,
)
from voiptwisted.sip.status import SIPStatus
from voiptwisted.sip.transaction import (
    T1,
    T2,
    ClientInviteTransaction,
    ClientTransaction,
    ServerInviteTransaction,
    ServerTransaction,
    TransactionTimeout,
)
from voiptwisted.sip.uri import CallerID, InvalidURI, SipURI

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from voiptwisted.interfaces import IUserAgent

__all__ = ["SUPPORTED_OPTIONS", "CallFailed", "Dialog", "DialogState"]

log = Logger()

#: Responses that may mean "your SRTP offer is not acceptable" (issue 5: retry with RTP/AVP).
_SRTP_REFUSALS = frozenset({415, 488, 606})
#: Option tags we support (RFC 3261 §8.2.2.3 / §20.37): our Supported header, and what a
#: Require may name without a 420: session timers (RFC 4028), reliable provisionals
#: (RFC 3262), ``replaces`` (RFC 3891) and ``norefersub`` (RFC 4488).
SUPPORTED_OPTIONS = frozenset({"norefersub", "outbound", "replaces", OPTION_TAG, RELIABLE_TAG})
#: The Supported value of our INVITEs and 2xx responses.
_SUPPORTED = ", ".join(sorted(SUPPORTED_OPTIONS))
#: The Supported value of our refresh requests: their 18x are not PRACKed.
_SUPPORTED_REFRESH = ", ".join(sorted(SUPPORTED_OPTIONS - {RELIABLE_TAG}))
#: Retry-After (seconds) of the 503 a call gets when no RTP port is free.
RETRY_AFTER_NO_PORT = 30

_Method = TypeVar("_Method", bound=Callable[..., Any])


#: INFO bodies that carry a key press (legacy INFO usage, RFC 6086 §2): Cisco's
#: ``application/dtmf-relay`` (``Signal=5``, ``Duration=160``) and ``application/dtmf``
#: (the key alone).  No Info Package is supported (``Recv-Info`` stays empty).
DTMF_INFO_TYPES = ("application/dtmf-relay", "application/dtmf")
#: Largest INFO body we read, in octets; a key press takes about 30.  Larger: 413.
MAX_INFO_BODY = 512
_DTMF_KEYS = "0123456789*#ABCD"


def _warning(reason: str | None) -> list[tuple[str, str]]:
    """A Warning telling why an offer was refused (RFC 3261 §20.43: 399, miscellaneous,
    from the pseudonym agent); quotes and backslashes kept out, 80 characters at most."""
    if not reason:
        return []
    text = " ".join(reason.replace('"', "'").replace("\\", "/").split())[:80]
    return [("Warning", f'399 voiptwisted "{text}"')]


def _dtmf_key(value: str) -> str | None:
    """A key from its name (``5``, ``*``, ``a``) or its RFC 4733 event number (``10`` = ``*``)."""
    value = value.strip().upper()
    if len(value) == 1 and value in _DTMF_KEYS:
        return value
    if value.isdigit() and len(value) == 2 and int(value) < len(_DTMF_KEYS):
        return _DTMF_KEYS[int(value)]
    return None


def parse_dtmf_info(content_type: str, body: bytes) -> str | None:
    """The key an INFO body of *content_type* (one of :data:`DTMF_INFO_TYPES`) carries.

    ``application/dtmf-relay`` is ``name=value`` lines, the key in ``Signal``; other
    lines (``Duration``) are ignored.  ``application/dtmf`` is the key alone.  One pass
    over a bounded body, no regular expression; None when no key is found.
    """
    if len(body) > MAX_INFO_BODY:
        return None
    text = body.decode("ascii", "replace")
    if content_type == "application/dtmf":
        return _dtmf_key(text)
    for line in text.split("\n"):
        name, equals, value = line.partition("=")
        if equals and name.strip().lower() == "signal":
            return _dtmf_key(value)
    return None




def _call_boundary(method: _Method) -> _Method:
    """Run *method* (a timer, Deferred callback or core notification of a dialog) so that
    an exception in it ends that call cleanly instead of escaping into the reactor.

    Issue 14 finding 9: an exception in a timer used to leave the call registered for
    the life of the flow, with a traceback per retry.  Now it is one log line and
    :meth:`Dialog._internal_error` (500, BYE or local teardown).
    """

    @functools.wraps(method)
    def guarded(self: Dialog, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            self._internal_error(method.__name__, exc)
            return None

    return guarded  # type: ignore[return-value]


def remote_target(contacts: list[NameAddr]) -> str | None:
    """The remote target a Contact gives a dialog (RFC 3261 §12.1.1 / §12.1.2).

    None without Contact; :class:`SIPParseError` when its URI could not be the
    Request-URI of our in-dialog requests (the ACK, the BYE): such a call is refused
    when it is set up (400 to the INVITE, BYE after the 2xx), never found stuck later.
    """
    if not contacts:
        return None
    uri = contacts[0].uri
    try:
        # The very check every Request we build applies to its Request-URI.
        Request("OPTIONS", uri)
    except ValueError:
        raise SIPParseError(f"unusable Contact URI {uri[:60]!r}", 400) from None
    return uri


def _out_of_ports(failure: Failure) -> bool:
    """Whether *failure* is "no RTP port (or descriptor) left": a 503, not a bug."""
    return failure.check(CannotListenError) is not None

#: Targets one dial tries at most, the dialled one included (RFC 3261 §8.1.3.4 leaves the
#: bound to the UAC; a redirect server controls the Contacts, so it must not make us call
#: without end).
MAX_REDIRECT_TARGETS = 5


def _retry_after_seconds(value: str | None) -> float | None:
    """The delta-seconds of a Retry-After value (RFC 3261 §20.33), None if absent or bad."""
    if value is None:
        return None
    text = value.split(";", 1)[0].split("(", 1)[0].strip()
    return float(text) if text.isdigit() and len(text) <= 10 else None


def _q_value(contact: NameAddr) -> float:
    """A Contact's ``q`` (RFC 3261 §20.10), 1.0 when absent or malformed."""
    value = contact.params.get("q")
    try:
        q = float(value) if value is not None else 1.0
    except ValueError:
        return 1.0
    return q if 0.0 <= q <= 1.0 else 1.0


class CallFailed(Exception):
    """An outbound call ended with a final non-2xx status (or timed out: 408).

    ``str()`` is the status line, e.g. ``"486 Busy Here"``.  ``retry_after`` is the
    response's Retry-After in seconds (RFC 3261 §20.33), None without one.
    """

    def __init__(
        self, status_code: int, phrase: str | None = None, *, retry_after: float | None = None
    ) -> None:
        self.status_code = int(status_code)
        self.phrase = phrase or SIPStatus.phrase_for(self.status_code)
        self.retry_after = retry_after
        super().__init__(f"{self.status_code} {self.phrase}")

    def __str__(self) -> str:
        return f"{self.status_code} {self.phrase}"


class DialogState(enum.Enum):
    """Where a call is: before the final response, established, or over (RFC 3261 §12)."""

    INIT = "init"
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def _new_tag() -> str:
    return uuid.uuid4().hex[:16]


def _methods(message: Request | Response) -> frozenset[str]:
    """The methods a message's Allow headers list (RFC 3261 §20.5), upper-cased."""
    return frozenset(
        method.strip().upper()
        for value in message.headers.getlist("Allow")
        for method in value.split(",")
        if method.strip()
    )


def _interval_too_small(request: Request) -> Response | None:
    """422 with our Min-SE when *request* asks for a shorter session interval (RFC 4028 §9)."""
    floor = session_interval_too_small(request)
    if floor is None:
        return None
    return Response.from_request(request, 422, TOO_SMALL_PHRASE, headers=[("Min-SE", str(floor))])


def _uri_of(value: str) -> str:
    """The URI inside a From/To/Contact/Route value, or the value itself."""
    try:
        return NameAddr.parse(value).uri
    except SIPParseError:
        return value.strip().strip("<>")


@implementer(IDialog)
class Dialog(TransferMixin):
    """A SIP dialog (RFC 3261 §12) and the call it carries.

    Attributes follow the reference: ``call_id``, ``local_tag``,
    ``remote_tag``, ``remote_contact`` (the remote target URI, §12.1),
    ``route_set`` (list of Route values, §12.1.1/§12.1.2), ``local_party`` /
    ``remote_party`` (our and their From/To values, as :class:`CallerID`, with
    tags), ``outbound_cseq`` (our last CSeq number, §12.2.1.1), ``sip`` (the
    protocol) and ``session`` (the ISession once media runs).  ``session_timer`` is
    the call's RFC 4028 session timer (:class:`~voiptwisted.sip.session_timer.SessionTimer`:
    the interval agreed and whether we refresh); a session that expires unrefreshed ends
    with BYE and ``hangup_received``.
    """

    #: RFC 3261 §17.1.1.1 / §17.1.2.2 timer values, in seconds.
    T1: float = T1
    T2: float = T2
    #: The longest :meth:`bye` waits for the BYE's answer before it ends the dialog anyway
    #: (the reference's name; 64*T1, RFC 3261 §17.1.2.2 Timer F).
    BYE_ACK_TIMEOUT: ClassVar[datetime.timedelta] = datetime.timedelta(seconds=64 * T1)
    #: Seconds an established call outlives its dead signalling flow if no new flow adopts it.
    orphan_timeout: float = 180.0
    #: Seconds an inbound call may ring unanswered (without a shorter INVITE Expires).
    ring_timeout: float = 300.0
    #: Glare retries (491) of one target refresh before it is given up (§14.1).
    refresh_retries: int = 5
    #: Whether ``dial`` follows 3xx redirects (RFC 3261 §8.1.3.4); ``dial(...,
    #: follow_redirects=False)`` turns it off for one call.
    follow_redirects: bool = True
    #: Send our 18x reliably (RFC 3262) also when the INVITE only lists ``100rel`` in
    #: ``Supported``; False (the default): only when it ``Require``s it.
    reliable_when_supported: bool = False

    def __init__(
        self,
        *,
        sip: IUserAgent | None = None,
        call_id: str | None = None,
        local_tag: str | None = None,
        remote_tag: str | None = None,
        remote_contact: str | None = None,
        route_set: list[str] | None = None,
        local_party: str | None = None,
        remote_party: str | None = None,
        outbound_cseq: int = 1,
        uac: SipURI | None = None,
    ) -> None:
        self.sip = sip
        self.uac = uac
        #: When this dialog object was made (UTC), on the UA's reactor when there is one.
        clock = getattr(sip, "clock", None)
        now = clock.seconds() if clock is not None else time.time()
        self.created = datetime.datetime.fromtimestamp(now, datetime.UTC)
        self.call_id = call_id or f"{uuid.uuid4().hex}@voiptwisted"
        self.local_tag = local_tag or _new_tag()
        self.remote_tag = remote_tag
        self.remote_contact = remote_contact
        self.route_set: list[str] = list(route_set or [])
        self.local_party = CallerID(local_party) if local_party is not None else None
        self.remote_party = CallerID(remote_party) if remote_party is not None else None
        self.outbound_cseq = outbound_cseq
        self.remote_cseq: int | None = None
        self.session: Any = None
        self.media: Any = None
        self.state = DialogState.INIT
        self.inbound = False
        self.invite_transaction: ServerInviteTransaction | None = None
        self.invite_request: Request | None = None
        self._session_class: type | None = None
        self._session_kwargs: dict[str, Any] = {}
        # inbound: our 2xx, retransmitted until the ACK (§13.3.1.4)
        self._ok: Response | None = None
        self._ok_interval = self.T1
        self._ok_timer: IDelayedCall | None = None
        self._ack_deadline: IDelayedCall | None = None
        self._late_offer = False
        # re-INVITE (§14.2): the pending server transaction and its media Deferred; whether
        # the 2xx in ``_ok`` answers a re-INVITE and, without SDP, carries our offer.
        self._reinvite_tx: ServerTransaction | None = None
        self._reinvite_deferred: Deferred[bytes] | None = None
        self._ok_reinvite = False
        self._reoffered = False
        self._answering = False
        #: The server transaction of an UPDATE whose offer the media is answering (§5.2).
        self._update_tx: ServerTransaction | None = None
        self._update_deferred: Deferred[bytes] | None = None
        #: The CSeq of the last INFO that carried a key (one key per INFO, RFC 6086 §2).
        self._info_cseq: int | None = None
        self._expiry_timer: IDelayedCall | None = None
        self._bye_after_ack = False
        # outbound
        self._dial_deferred: Deferred[Dialog] | None = None
        self._invite_tx: ClientInviteTransaction | None = None
        self._provisional_seen = False
        self._cancel_requested = False
        self._cancel_sent = False
        self._auth_tried = False
        self._insecure_tried = False
        #: This call's SRTP policy ("required" whenever a sips: URI is involved).
        self._srtp: str | None = None
        self._ack: Request | None = None
        #: The SDP of the 18x that started early media (RFC 3960), None without one.
        self._early_sdp: bytes | None = None
        # redirects (§8.1.3.4): targets tried (canonical form), targets still to try
        self._follow = True
        self._tried: set[str] = set()
        self._redirect_queue: list[str] = []
        # either
        self._bye_deferreds: list[Deferred[None]] = []
        self._ended_deferreds: list[Deferred[None]] = []
        self._bye_sent = False
        self._orphan_timer: IDelayedCall | None = None
        # target refresh after a flow change (RFC 5626 §4.2.1, :meth:`refresh_target`)
        self._stale_contact = False
        self._refresh_tx: ClientTransaction | None = None
        self._refresh_timer: IDelayedCall | None = None
        self._refresh_ack: Request | None = None
        self._refresh_attempts = 0
        #: The methods the peer's Allow listed (RFC 3261 §20.5), from its INVITE or 2xx.
        self.remote_allow: frozenset[str] = frozenset()
        # RFC 3262: our reliable 18x (inbound), the media whose 2xx waits for their PRACKs
        # (§3), whether our offer went in a reliable 18x (§5: the answer is in its PRACK);
        # the RSeq sequences of the reliable 18x we PRACK (outbound, §4).
        self._reliable: ReliableProvisionals | None = None
        self._ok_waiting: Any = None
        self._offer_in_provisional = False
        self._progressing = False
        self._provisionals = ProvisionalSequence()
        #: This call's session timer (RFC 4028): the interval agreed and who refreshes.
        self.session_timer = SessionTimer()
        self._session_refresh_timer: IDelayedCall | None = None
        self._session_expiry_timer: IDelayedCall | None = None
        self._timer_refresh_due = False
        #: The peer answered our UPDATE refresh 405/501: refresh by re-INVITE from now on.
        self._update_unusable = False
        #: RFC 3311 §5.1: the INVITE's offer/answer completed in a reliable 18x (outbound:
        #: its answer came in one), and an UPDATE changed the media before the 2xx.
        self._early_answer_reliable = False
        self._early_updated = False
        #: RFC 3960: session_progress() was given the session to run before the 2xx.
        self._early_session = False
        #: More headers of our INVITE (a transfer's Replaces and Referred-By, RFC 3891 §4).
        self._extra_invite_headers: list[tuple[str, str]] = []

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_request(cls, request: Request, **kwargs: Any) -> Dialog:
        """Create the UAS side of a dialog from an inbound INVITE (RFC 3261 §12.1.1).

        The remote tag is the From tag, the remote target the Contact URI,
        the route set the Record-Route values in order, the remote CSeq the
        INVITE's; our tag is new.
        """
        target = remote_target(request.contact)
        our_tag = request.remote_tag
        local_party = request.headers["To"]
        if our_tag is None:
            our_tag = _new_tag()
            local_party = f"{local_party};tag={our_tag}"
        dialog = cls(
            call_id=request.call_id,
            local_tag=our_tag,
            remote_tag=request.local_tag,
            remote_contact=target,
            route_set=request.headers.getlist("Record-Route"),
            local_party=local_party,
            remote_party=request.headers["From"],
            **kwargs,
        )
        dialog.inbound = True
        dialog.remote_allow = _methods(request)
        dialog.remote_cseq = request.cseq[0]
        dialog.invite_request = request
        dialog.state = DialogState.EARLY
        return dialog

    @property
    def from_header(self) -> str | None:
        """The From value of our requests in this dialog: our party with our tag
        (RFC 3261 §12.2.1.1), or None before the dialog has parties."""
        return None if self.local_party is None else str(self.local_party)

    @property
    def to_header(self) -> str | None:
        """The To value of our requests in this dialog: the remote party, with its tag
        once known (RFC 3261 §12.2.1.1), or None before the dialog has parties."""
        return None if self.remote_party is None else str(self.remote_party)

    @property
    def headers(self) -> dict[str, str]:
        """From, To and Call-ID of this dialog (RFC 3261 §12: what identifies it), those
        known so far."""
        found = {"From": self.from_header, "To": self.to_header, "Call-ID": self.call_id}
        return {name: value for name, value in found.items() if value is not None}

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.call_id} {self.state.value} "
            f"remote={self.remote_party!r}>"
        )

    # -- application hooks (IDialog) -----------------------------------------------------

    def call_received(self) -> None:
        """Called once for each new inbound INVITE.  The base class rejects with 486 Busy Here."""
        self.reject()

    def hangup_received(self) -> None:
        """Called when the remote party ends the call (BYE, or CANCEL before answer)."""

    def progress_received(self, status_code: int) -> None:
        """Called for each 101-199 response to our INVITE (see ``IDialog``); does nothing."""

    def deliver_call(self) -> None:
        """Hand this new inbound call to the application: :meth:`call_received`, guarded
        like every application hook (an exception is logged and ends the call with 500).
        The UA core calls it once, after the 100 Trying (RFC 3261 §13.3).  A call that
        replaces one of ours (INVITE with Replaces, RFC 3891 §3) is answered at once
        instead, like the call it replaces."""
        if self.replacing is not None:
            self._call_app(self._take_over)
            return
        self._call_app(self.call_received)

    def invite_failed(self) -> None:
        """The UA core answered this call's INVITE with an error (400/500): forget the call."""
        self.invite_transaction = None
        self._end()

    # -- inbound (UAS) -------------------------------------------------------------------

    @property
    def _pending_invite(self) -> bool:
        tx = self.invite_transaction
        return tx is not None and not tx.final_sent and self.state is DialogState.EARLY

    def _response(self, status_code: int, **kwargs: Any) -> Response:
        assert self.invite_request is not None
        return Response.from_request(
            self.invite_request, status_code, to_tag=self.local_tag, **kwargs
        )

    def _dialog_headers(self) -> list[tuple[str, str]]:
        """Contact and Record-Route for responses that establish the dialog (§12.1.1)."""
        invite = self.invite_request
        assert self.sip is not None and invite is not None
        record_route = invite.headers.getlist("Record-Route")
        # §12.1.1: SIPS Request-URI, or top Record-Route (else Contact) -> SIPS Contact.
        top = record_route[0] if record_route else invite.headers.get("Contact")
        contact = self.sip.contact_for(invite.uri, _uri_of(top) if top else None)
        return [("Contact", contact), *(("Record-Route", rr) for rr in record_route)]

    def ringing(self) -> None:
        """Send 180 Ringing with our To tag (RFC 3261 §13.3.1.1); ignored once answered."""
        if not self._pending_invite:
            return
        self._send_provisional(self._response(180, headers=self._dialog_headers()))

    def session_progress(self, session_class: type | None = None, **session_kwargs: Any) -> None:
        """Send 183 Session Progress with our SDP for the pending INVITE (RFC 3960, RFC 3262).

        With reliable provisionals (the INVITE requires ``100rel``, or supports it and
        ``reliable_when_supported``) the 183 carries our answer to the INVITE's offer, or
        our offer when it had none (its answer then comes in the PRACK, RFC 3262 §5), and
        :meth:`answer` sends its 200 only once that 183 is acknowledged (§3).  Unreliably
        it carries our answer, or no SDP when the INVITE had no offer.  Either way the
        media is agreed here and :meth:`answer` keeps it.  Without *session_class* our
        session (and our RTP) starts at the ACK as for any call.  With it, our early media
        (RFC 3960 §3): ``session_class(dialog=self, **session_kwargs)`` starts as soon as
        the 183 carries our answer (or, when it carries our offer, once the PRACK brings
        the answer), so an announcement is heard before the call is answered; that
        session then runs on for the whole call and :meth:`answer`'s session class is not
        used.  Once per call; ignored once answered.
        """
        if not self._pending_invite or self._answering or self._progressing:
            return
        if session_class is not None:
            self._session_class = session_class
            self._session_kwargs = dict(session_kwargs)
            self._early_session = True
        invite = self.invite_request
        assert invite is not None
        reliable = wants_reliable(invite, self.reliable_when_supported)
        if self.media is not None or (not invite.body and not reliable):
            self._send_provisional(self._response(183, headers=self._dialog_headers()))
            return
        self._progressing = True
        self._srtp = self._srtp_policy(invite.uri, explicit=False)
        self._late_offer = not invite.body
        d = self._new_media(invite.body or None)
        d.addCallbacks(self._send_progress, self._answer_failed)

    @_call_boundary
    def _send_progress(self, media: Any) -> None:
        """The media for :meth:`session_progress` is ready: 183 with its SDP (then the
        200, when :meth:`answer` was called meanwhile)."""
        self._progressing = False
        if not self._pending_invite:
            media.stop()
            return
        self.media = media
        self._offer_in_provisional = self._late_offer
        self._send_provisional(self._response(
            183,
            headers=[*self._dialog_headers(), ("Content-Type", "application/sdp")],
            body=media.local_sdp,
        ))
        if not self._offer_in_provisional:
            self._start_early_session()
        if self._answering:
            self._send_ok(media)

    def _send_provisional(self, response: Response) -> None:
        """Send a 101-199 to the pending INVITE: reliably (RFC 3262 §3) when the INVITE
        requires ``100rel`` (or supports it and ``reliable_when_supported``), else as is."""
        tx, invite, sip = self.invite_transaction, self.invite_request, self.sip
        assert tx is not None and invite is not None and sip is not None
        if not wants_reliable(invite, self.reliable_when_supported):
            tx.respond(response)
            return
        if self._reliable is None:
            self._reliable = ReliableProvisionals(
                invite, timers=sip.timers, t1=self.T1, transmit=tx.respond,
                on_timeout=self._prack_timed_out,
            )
        if not self._reliable.send(response):
            log.info("call {call_id}: {code} dropped: too many reliable 18x queued",
                     call_id=self.call_id, code=response.status_code)

    @_call_boundary
    def _prack_timed_out(self) -> None:
        """RFC 3262 §3: a reliable 18x unacknowledged for 64*T1: the INVITE gets 5xx."""
        if not self._pending_invite:
            return
        log.info("call {call_id}: no PRACK within 64*T1, 500 to the INVITE",
                 call_id=self.call_id)
        assert self.invite_transaction is not None
        self.invite_transaction.respond(self._response(SIPStatus.SERVER_INTERNAL_ERROR))
        self.invite_transaction = None
        self._end()
        self._call_app(self.hangup_received)

    def _prack_received(self, request: Request, transaction: ServerTransaction) -> None:
        """A PRACK (RFC 3262 §3): 200 when its RAck matches our unacknowledged reliable 18x,
        else 481.  The 18x that carried our offer takes its answer from the PRACK (§5); a
        PRACK without it ends the call (488 to the INVITE).  An offer of the peer's in a
        PRACK is refused with 488 (we make no early re-negotiation), yet the PRACK still
        acknowledges its 18x.  The 2xx that waited for this acknowledgement goes out now."""
        reliable = self._reliable
        rack = parse_rack(request.headers.get("RAck"))
        acked = reliable.acknowledge(rack) if reliable is not None and rack else None
        if acked is None:
            transaction.respond(Response.from_request(request, 481))
            return
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        new_offer = bool(request.body)
        if self._offer_in_provisional and acked.body:
            new_offer = False
            self._offer_in_provisional = False
            try:
                if content_type != "application/sdp":
                    raise ValueError("no SDP answer in the PRACK")
                self.media.accept_answer(request.body)
            except Exception as exc:
                log.info("call {call_id}: unusable answer in PRACK: {exc}",
                         call_id=self.call_id, exc=exc)
                transaction.respond(Response.from_request(request, 200))
                self._ok_waiting = None
                self.reject(SIPStatus.NOT_ACCEPTABLE_HERE)
                return
            self._late_offer = False
            self._start_early_session()
        # the 18x is acknowledged either way; only a new offer in the PRACK is refused
        transaction.respond(Response.from_request(request, 488 if new_offer else 200))
        waiting = self._ok_waiting
        if waiting is not None and reliable is not None and not reliable.sdp_unacknowledged:
            self._ok_waiting = None
            self._send_ok(waiting)

    def _start_early_session(self) -> None:
        """Our early media (RFC 3960 §3): the session given to :meth:`session_progress`
        starts now that the 183's offer/answer is agreed; it failing rejects the call 500."""
        if not self._early_session or self.session is not None or not self._pending_invite:
            return
        assert self._session_class is not None
        try:
            self.session = self._session_class(dialog=self, **self._session_kwargs)
            self.media.start(self.session)
        except Exception:
            log.failure("call {call_id}: early session failed to start", call_id=self.call_id)
            self.reject(SIPStatus.SERVER_INTERNAL_ERROR)

    def _new_media(self, offer: bytes | None, secure: bool | None = None) -> Deferred[Any]:
        """Set up this call's media through the CallMedia contract; fires with the media.

        *offer* (bytes) -> ``answer_offer``; None -> ``create_offer``.  With a
        ``stun_server`` configured the ``*_deferred`` variants run STUN first,
        so the SDP carries the mapped address; otherwise it is synchronous.
        """
        sip = self.sip
        assert sip is not None
        media_class, config, host = sip.media_class, sip.media_config, sip.media_host
        stun = getattr(config, "stun_server", None) is not None
        kwargs: dict[str, Any] = {}
        configured = getattr(config, "srtp", None)
        # A stricter policy for this call (sips:) is passed on when it changes the SDP:
        # an answer, or an offer under "off" ("optional" already offers SRTP; only its
        # plain-RTP retry differs, see _final_response).
        if self._srtp not in (None, configured) and (offer is not None or configured == "off"):
            kwargs["srtp"] = self._srtp
        if offer is not None:
            if stun and hasattr(media_class, "answer_offer_deferred"):
                return media_class.answer_offer_deferred(config, offer, host, **kwargs)
            return maybeDeferred(media_class.answer_offer, config, offer, host, **kwargs)
        if secure is not None:
            kwargs["secure"] = secure
        if stun and hasattr(media_class, "create_offer_deferred"):
            return media_class.create_offer_deferred(config, host, **kwargs)
        return maybeDeferred(media_class.create_offer, config, host, **kwargs)

    def answer(self, *, session_class: type, **session_kwargs: Any) -> None:
        """Accept the pending INVITE: SDP answer, 200 OK retransmitted until the ACK.

        RFC 3264 negotiation is done by ``CallMedia.answer_offer``; when it
        raises ``NegotiationFailed`` the call is rejected with its status (488).
        An INVITE without SDP gets our offer in the 200 and the answer is
        taken from the ACK (RFC 3261 §13.2.1).  The session is created and
        media started when the ACK arrives (§13.3.1.4).
        """
        if not self._pending_invite or self._answering:
            log.warn(
                "answer() ignored for call {call_id}: no pending INVITE", call_id=self.call_id
            )
            return
        assert self.invite_request is not None
        self._answering = True
        self.session_timer = self._new_session_timer()
        if self.session is None:
            # (an early session of session_progress() runs on instead)
            self._session_class = session_class
            self._session_kwargs = dict(session_kwargs)
        if self._progressing:
            return  # _send_progress sends the 200 after its 183
        if self.media is not None:
            # session_progress() agreed the media already
            self._send_ok(self.media)
            return
        self._late_offer = not self.invite_request.body
        self._srtp = self._srtp_policy(self.invite_request.uri, explicit=False)
        d = self._new_media(None if self._late_offer else self.invite_request.body)
        d.addCallbacks(self._send_ok, self._answer_failed)

    @_call_boundary
    def _answer_failed(self, failure: Failure) -> None:
        self._answering = self._progressing = False
        code = self._failure_status(failure, "media negotiation failed", "cannot set up media")
        if code == SIPStatus.SERVICE_UNAVAILABLE:
            self.reject(code, retry_after=RETRY_AFTER_NO_PORT)
            return
        self.reject(SIPStatus.SERVER_INTERNAL_ERROR if code is None else code)

    def _failure_status(self, failure: Failure, refused: str, broken: str) -> int | None:
        """The SIP status a media failure carries (4xx-6xx: logged in one line as *refused*),
        or None for an internal error (logged with its traceback as *broken*: answer 500)."""
        if _out_of_ports(failure):
            assert self.sip is not None
            rate_limited_warning(
                self.sip.timers.clock, "no free RTP port",
                "no free RTP port: calls get 503 (widen --rtp-ports or lower --max-calls)",
            )()
            return int(SIPStatus.SERVICE_UNAVAILABLE)
        code = getattr(failure.value, "status_code", None)
        if isinstance(code, int) and 400 <= code < 700:
            log.info(
                "call {call_id}: {what}: {reason}",
                call_id=self.call_id,
                what=refused,
                reason=failure.value,
            )
            return code
        log.failure("call {call_id}: {what}", failure, call_id=self.call_id, what=broken)
        return None

    @_call_boundary
    def _send_ok(self, media: Any) -> None:
        """Media is ready: send the 200 with our SDP and retransmit it until the ACK."""
        if not self._pending_invite:
            # CANCEL, BYE or Expires ended the call while the media was being set up.
            media.stop()
            return
        sip = self.sip
        assert sip is not None and self.invite_transaction is not None
        self.media = media
        if self._reliable is not None and self._reliable.sdp_unacknowledged:
            # RFC 3262 §3: no 2xx before the PRACK of a reliable 18x with SDP
            self._ok_waiting = media
            return
        self._cancel_expiry()
        # RFC 3261 §13.2.1: once an early UPDATE moved the session on, the 2xx repeats no
        # (now stale) answer and makes no new offer: it carries no SDP.
        sdp = [] if self._early_updated else [("Content-Type", "application/sdp")]
        ok = self._response(
            200,
            headers=[
                *self._dialog_headers(),
                ("Allow", sip.allow_header),
                ("Supported", _SUPPORTED),
                *self.session_timer.answer(self.invite_request),
                *sdp,
            ],
            body=b"" if self._early_updated else media.local_sdp,
        )
        self.state = DialogState.CONFIRMED
        self.invite_transaction.respond(ok)
        self.invite_transaction = None
        if self._reliable is not None:
            self._reliable.stop()
        self._retransmit_until_ack(ok)
        self._restart_session_timer()

    def _retransmit_until_ack(self, ok: Response) -> None:
        """Keep *ok* (a 2xx to an INVITE or re-INVITE) until its ACK (§13.3.1.4, §14.2)."""
        assert self.sip is not None
        self._ok = ok
        self._ok_interval = self.T1
        self._ok_timer = self.sip.timers.call_later(self._ok_interval, self._retransmit_ok)
        self._ack_deadline = self.sip.timers.call_later(64 * self.T1, self._ack_timed_out)

    @_call_boundary
    def _retransmit_ok(self) -> None:
        """RFC 3261 §13.3.1.4: resend the 2xx at T1, 2*T1 ... capped at T2 until the ACK."""
        assert self.sip is not None and self._ok is not None
        self._ok_timer = None
        self.sip.send_message(self._ok)
        self._ok_interval = min(self._ok_interval * 2, self.T2)
        self._ok_timer = self.sip.timers.call_later(self._ok_interval, self._retransmit_ok)

    def _stop_ok_retransmission(self) -> None:
        if self.sip is not None:
            self.sip.timers.cancel(self._ok_timer)
            self.sip.timers.cancel(self._ack_deadline)
        self._ok_timer = self._ack_deadline = None

    def expire_after(self, seconds: float | None) -> None:
        """Bound how long the INVITE may stay unanswered.

        RFC 3261 §13.3.1: past the INVITE's ``Expires`` the UAS answers 487.
        Without one, ``ring_timeout`` still ends a call the application never
        answered (480), so a silent peer cannot pile up pending calls.
        """
        assert self.sip is not None
        if seconds is None or seconds > self.ring_timeout:
            code, seconds = SIPStatus.TEMPORARILY_UNAVAILABLE, self.ring_timeout
        else:
            code = SIPStatus.REQUEST_TERMINATED
        self._expiry_timer = self.sip.timers.call_later(seconds, self._expired, code)

    def _cancel_expiry(self) -> None:
        if self.sip is not None:
            self.sip.timers.cancel(self._expiry_timer)
        self._expiry_timer = None

    @_call_boundary
    def _expired(self, code: int) -> None:
        self._expiry_timer = None
        if not self._pending_invite:
            return
        log.info(
            "call {call_id}: INVITE unanswered in time ({code})", call_id=self.call_id, code=code
        )
        assert self.invite_transaction is not None
        self.invite_transaction.respond(self._response(code))
        self.invite_transaction = None
        self._end()
        self._call_app(self.hangup_received)

    @_call_boundary
    def _ack_timed_out(self) -> None:
        """No ACK within 64*T1: the dialog is confirmed, the session ends with BYE (§13.3.1.4)."""
        self._ack_deadline = None
        log.warn(
            "call {call_id}: no ACK for 200 OK within 64*T1, hanging up", call_id=self.call_id
        )
        self._stop_ok_retransmission()
        self._ok = None
        self._send_bye()

    @_call_boundary
    def ack_received(self, ack: Request) -> None:
        """The ACK for our 2xx: stop retransmitting, create the session, start media.

        The ACK of a re-INVITE's 2xx only ends the retransmission, or carries
        the answer to the offer we made in that 2xx (:meth:`_reinvite_acked`).
        """
        if self._ok is None or ack.cseq[0] != self._ok.cseq[0]:
            return
        self._stop_ok_retransmission()
        self._ok = None
        if self._ok_reinvite:
            self._reinvite_acked(ack)
            return
        if self._late_offer:
            try:
                self.media.accept_answer(ack.body)
            except Exception:
                log.failure("call {call_id}: unusable SDP answer in ACK", call_id=self.call_id)
                self._send_bye()
                return
        if self._bye_after_ack:
            self._send_bye()
            return
        started = self.session is not None or self._start_session() is None
        if started and self.replacing is not None:
            self._replaced()

    def _start_session(self) -> Failure | None:
        """Create ``session_class(dialog=self, **kwargs)`` and start the media with it.

        An application exception is logged with the Call-ID, the call ends
        with BYE, and the failure is returned.
        """
        assert self._session_class is not None
        try:
            self.session = self._session_class(dialog=self, **self._session_kwargs)
            self.media.start(self.session)
        except Exception:
            failure = Failure()
            log.failure("call {call_id}: session failed to start", failure, call_id=self.call_id)
            self._send_bye()
            return failure
        return None

    def reject(
        self, status_code: int = SIPStatus.BUSY_HERE, *, retry_after: int | None = None
    ) -> None:
        """Reject the pending INVITE with a final 3xx-6xx response (default 486, §13.3.1.3).

        *retry_after* adds a Retry-After of that many seconds (RFC 3261 §20.33: a 503
        for an overload, a 486 the caller may retry).
        """
        code = int(status_code)
        if not 300 <= code < 700:
            raise ValueError(f"reject() needs a 3xx-6xx status, not {code}")
        if not self._pending_invite:
            return
        assert self.invite_transaction is not None
        headers = [("Retry-After", str(int(retry_after)))] if retry_after is not None else []
        self.invite_transaction.respond(self._response(code, headers=headers))
        self.invite_transaction = None
        self._end()

    @_call_boundary
    def cancel_received(self, cancel: Request) -> None:
        """CANCEL matched our pending INVITE (§9.2): 487 to the INVITE, then hangup_received().

        A CANCEL of a pending re-INVITE gets that re-INVITE 487 and the call
        carries on as it was (§9.2, §14.2).
        """
        pending = self._reinvite_tx
        if pending is not None and cancel.branch == pending.request.branch:
            self._end_reinvite(SIPStatus.REQUEST_TERMINATED)
            return
        if not self._pending_invite:
            return
        assert self.invite_transaction is not None
        self.invite_transaction.respond(self._response(SIPStatus.REQUEST_TERMINATED))
        self.invite_transaction = None
        self._end()
        self._call_app(self.hangup_received)

    def request_received(self, request: Request, transaction: ServerTransaction) -> None:
        """An in-dialog request (RFC 3261 §12.2.2): CSeq check, then BYE / re-INVITE / OPTIONS."""
        number = request.cseq[0]
        if self.remote_cseq is not None and number < self.remote_cseq:
            transaction.respond(Response.from_request(request, 500, "CSeq Out Of Order"))
            return
        self.remote_cseq = number
        method = request.method
        if method == "BYE":
            self._bye_received(request, transaction)
        elif method == "INVITE":
            self._reinvite_received(request, transaction)
        elif method == "OPTIONS":
            assert self.sip is not None
            transaction.respond(self.sip.options_response(request))
        elif method == "INFO":
            self._info_received(request, transaction)
        elif method == "UPDATE":
            self._update_received(request, transaction)
        elif method == "REFER":
            self._refer_received(request, transaction)
        elif method == "NOTIFY":
            self._notify_received(request, transaction)
        elif method == "PRACK":
            self._prack_received(request, transaction)
        else:
            assert self.sip is not None
            transaction.respond(self.sip.method_not_allowed_response(request))

    # -- INFO (RFC 6086) ---------------------------------------------------------------

    def _info_received(self, request: Request, transaction: ServerTransaction) -> None:
        """An INFO in this dialog: a DTMF key press goes to the session, once per key.

        RFC 6086 §4.2.2: an INFO naming an ``Info-Package`` we do not support gets 469
        Bad Info Package with our (empty) ``Recv-Info``.  Without a package (legacy
        usage, §2) a DTMF body (:data:`DTMF_INFO_TYPES`) is answered 200 and its key
        delivered with ``session.dtmf_received``; an INFO without a body gets 200 (some
        peers use it as a keep-alive); any other body gets 415 with ``Accept`` (RFC 3261
        §21.4.16), one over :data:`MAX_INFO_BODY` octets 413, a DTMF body naming no key 400.

        Each INFO is one key: its retransmissions are absorbed by its server transaction,
        an older CSeq was refused above and the same CSeq again (a retransmission reaching
        us after that transaction ended) is answered 200 and not delivered again.  A peer
        may send the same press both as INFO and as RFC 4733 events; the media keeps only
        one of them per call (``CallMedia.signalled_dtmf``: the first way a key arrives on
        the call is the one used from then on).  Keys before the session starts (before
        the ACK) are answered 200 and dropped: there is nobody to hand them to yet.
        """
        if request.headers.get("Info-Package") is not None:
            transaction.respond(
                Response.from_request(request, 469, headers=[("Recv-Info", "")])
            )
            return
        if not request.body:
            transaction.respond(Response.from_request(request, 200))
            return
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        if content_type not in DTMF_INFO_TYPES:
            accept = ", ".join(DTMF_INFO_TYPES)
            transaction.respond(Response.from_request(request, 415, headers=[("Accept", accept)]))
            return
        if len(request.body) > MAX_INFO_BODY:
            transaction.respond(Response.from_request(request, 413))
            return
        digit = parse_dtmf_info(content_type, request.body)
        if digit is None:
            transaction.respond(Response.from_request(request, 400, "No DTMF Signal"))
            return
        transaction.respond(Response.from_request(request, 200))
        number = request.cseq[0]
        if number == self._info_cseq:
            # The same INFO again on a new transaction (a retransmission a stateless hop
            # forwarded after ours ended): the key was had already.
            return
        self._info_cseq = number
        session = self.session
        if session is None or self.state is not DialogState.CONFIRMED:
            log.debug("call {call_id}: INFO key before the session, dropped", call_id=self.call_id)
            return
        signalled = getattr(self.media, "signalled_dtmf", None)
        if signalled is not None and not signalled():
            log.debug("call {call_id}: INFO key dropped, keys come as RFC 4733",
                      call_id=self.call_id)
            return
        hook = getattr(session, "dtmf_received", None)
        if hook is not None:
            self._call_app(hook, digit)

    # -- UPDATE (RFC 3311) -------------------------------------------------------------

    @property
    def _our_offer_outstanding(self) -> bool:
        """We made an offer not answered yet (RFC 3311 §5.2: an UPDATE offer now is glare).

        Our target-refresh re-INVITE in progress, our offer in a 2xx (late offer or a
        re-INVITE without SDP) waiting for the answer in its ACK, or our own INVITE
        still unanswered (an early dialog on an outbound call).
        """
        if self._refreshing_invite:
            return True
        if self._ok is not None and (self._reoffered if self._ok_reinvite else self._late_offer):
            return True
        if self.inbound:
            # our offer in a reliable 18x whose PRACK (with the answer) has not come
            return self._pending_invite and self._offer_in_provisional
        return self.state is DialogState.EARLY and not self._early_answer_reliable

    @property
    def _early_offer_answer_complete(self) -> bool:
        """RFC 3311 §5.1: the INVITE's offer/answer completed before its 2xx, so an UPDATE
        may carry a new offer in the early dialog.  Inbound: our 18x with SDP went reliably
        and is PRACKed (with the answer, when it carried our offer); outbound: the answer
        came in a reliable 18x (RFC 3262 §5)."""
        if self.media is None:
            return False
        if not self.inbound:
            return self.state is DialogState.EARLY and self._early_answer_reliable
        reliable = self._reliable
        return (
            self._pending_invite
            and reliable is not None
            and reliable.sdp_sent
            and not reliable.sdp_unacknowledged
            and not self._offer_in_provisional
            and not self._progressing
        )

    def _update_received(self, request: Request, transaction: ServerTransaction) -> None:
        """An UPDATE in this dialog (RFC 3311 §5.2): a target refresh, with or without an offer.

        Without a body (a session refresh) it is answered 200 with our Contact.  With an
        SDP offer in a confirmed dialog the media answers it as it answers a re-INVITE
        (``CallMedia.reanswer``; the session's ``media_changed`` hears of a change) and
        the answer goes in the 200; a refusal (488) leaves the call as it was.  §5.2:
        491 when an offer of ours is outstanding (glare; the peer retries after the
        §14.1 delay), 500 with a Retry-After of 0-10 s when an offer of the peer's is
        not answered yet.  In an early dialog (§5.1) an offer is taken once the INVITE's
        offer/answer is complete (a reliable 18x with SDP and its PRACK, RFC 3262), both
        as UAS and UAC: answered in the 200 and applied; the 2xx to the INVITE then
        carries no SDP.  Before that an UPDATE offer gets 500 with Retry-After (an
        inbound call) or 491 (our outbound call, whose offer is unanswered).
        """
        if self._bye_sent or self.state is DialogState.TERMINATED:
            transaction.respond(Response.from_request(request, 481))
            return
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        if request.body and content_type != "application/sdp":
            transaction.respond(
                Response.from_request(request, 415, headers=[("Accept", "application/sdp")])
            )
            return
        too_small = _interval_too_small(request)
        if too_small is not None:
            transaction.respond(too_small)
            return
        contacts = request.contact  # a target refresh (§5.2); malformed: 400 (§21.4.1)
        if not request.body:
            self._update_accepted(b"", request, transaction, contacts, None)
            return
        if self._our_offer_outstanding:
            transaction.respond(Response.from_request(request, 491))
            return
        early = self._early_offer_answer_complete
        if (
            (self._pending_invite and not early)
            or self._reinvite_tx is not None
            or self._update_tx is not None
            or (self.state is not DialogState.CONFIRMED and not early)
        ):
            transaction.respond(
                Response.from_request(
                    request, 500, headers=[("Retry-After", str(secrets.randbelow(11)))]
                )
            )
            return
        if self.media is None:
            transaction.respond(Response.from_request(request, 481))
            return
        self._update_tx = transaction
        # the 2xx to the INVITE, even one sent while this is answered, carries no SDP
        self._early_updated = self._early_updated or early
        before = getattr(self.media, "negotiated", None)
        deferred = maybeDeferred(self.media.reanswer, request.body)
        self._update_deferred = deferred
        deferred.addCallbacks(
            self._update_accepted,
            self._update_refused,
            callbackArgs=(request, transaction, contacts, before),
            errbackArgs=(request, transaction),
        )

    def _update_accepted(
        self,
        local_sdp: bytes,
        request: Request,
        transaction: ServerTransaction,
        contacts: list[NameAddr],
        before: Any,
    ) -> None:
        """200 to the UPDATE with our Contact (and our answer when it carried an offer)."""
        if self._update_tx is transaction:
            self._update_tx = self._update_deferred = None
        sip = self.sip
        if transaction.final_sent:
            return
        if sip is None or self.state is DialogState.TERMINATED:
            transaction.respond(Response.from_request(request, 481))
            return
        if contacts:
            self.remote_contact = contacts[0].uri
        headers = [
            ("Contact", sip.contact_for(request.uri)),
            ("Allow", sip.allow_header),
            ("Supported", _SUPPORTED),
        ]
        refreshed = self.state is DialogState.CONFIRMED
        if refreshed:
            headers += self.session_timer.answer(request)
        if local_sdp:
            headers.append(("Content-Type", "application/sdp"))
        transaction.respond(Response.from_request(request, 200, headers=headers, body=local_sdp))
        if refreshed:
            self._restart_session_timer()
        # That 2xx carried our current Contact: the peer's target is fresh (§12.2.1.2).
        self._stale_contact = False
        if local_sdp:
            self._media_changed(before)

    def _update_refused(
        self, failure: Failure, request: Request, transaction: ServerTransaction
    ) -> None:
        """The media refused the UPDATE's offer (its 4xx-6xx, 488) or failed (500)."""
        if self._update_tx is transaction:
            self._update_tx = self._update_deferred = None
        if transaction.final_sent:
            return
        code = self._failure_status(failure, "UPDATE refused", "cannot apply UPDATE")
        if code is None:
            # An internal error: 500 without a Warning, so nothing internal is disclosed.
            transaction.respond(Response.from_request(request, SIPStatus.SERVER_INTERNAL_ERROR))
            return
        reason = str(getattr(failure.value, "reason", "") or failure.value)
        transaction.respond(Response.from_request(request, code, headers=_warning(reason)))

    def _end_update(self) -> None:
        """The call ends with an UPDATE offer being answered: 487 to it (§15.1.2)."""
        transaction, deferred = self._update_tx, self._update_deferred
        self._update_tx = self._update_deferred = None
        if transaction is not None and not transaction.final_sent:
            transaction.respond(
                Response.from_request(transaction.request, SIPStatus.REQUEST_TERMINATED)
            )
        if deferred is not None:
            deferred.cancel()

    # -- re-INVITE (RFC 3261 §14.2, RFC 3264 §8) -------------------------------------------

    def _reinvite_refusal(self, request: Request) -> Response | None:
        """The response that refuses *request* before looking at its SDP, if one must.

        §14.2: a second INVITE before the final response to an earlier one gets
        500 with a random Retry-After of 0-10 s, and an INVITE while our own is
        in progress 491.  Before the ACK of our 2xx we answer 491 too (Request
        Pending, §21.4.27), so the peer retries after it (§14.1): that INVITE's
        offer/answer may still be open (after a late offer the answer comes in
        the ACK, and RFC 3264 §4 allows no new offer meanwhile) and one 2xx is
        retransmitted at a time.  A call already ending has no session to
        modify: 481.
        """
        if self._pending_invite or self._reinvite_tx is not None:
            return Response.from_request(
                request, 500, headers=[("Retry-After", str(secrets.randbelow(11)))]
            )
        if self.state is DialogState.EARLY or self._ok is not None or self._refreshing_invite:
            return Response.from_request(request, 491)
        if self.state is not DialogState.CONFIRMED or self._bye_sent or self.media is None:
            return Response.from_request(request, 481)
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        if request.body and content_type != "application/sdp":
            return Response.from_request(request, 415, headers=[("Accept", "application/sdp")])
        return _interval_too_small(request)

    def _reinvite_received(self, request: Request, transaction: ServerTransaction) -> None:
        """A re-INVITE: answer its offer, or offer in the 2xx when it has none (§14.2).

        The media (``CallMedia.reanswer`` / ``reoffer``, which may return a
        Deferred) decides; a refusal leaves the call as it was.  A CANCEL meanwhile
        cancels that Deferred and the re-INVITE gets 487.
        """
        refusal = self._reinvite_refusal(request)
        if refusal is not None:
            transaction.respond(refusal)
            return
        contacts = request.contact  # parsed now: a malformed Contact is a 400 (§21.4.1)
        self._reinvite_tx = transaction
        transaction.tu = self
        before = getattr(self.media, "negotiated", None)
        if request.body:
            deferred = maybeDeferred(self.media.reanswer, request.body)
        else:
            deferred = maybeDeferred(self.media.reoffer)
        self._reinvite_deferred = deferred
        deferred.addCallbacks(
            self._reinvite_accepted,
            self._reinvite_refused,
            callbackArgs=(request, contacts, before),
        )

    def _reinvite_accepted(
        self, local_sdp: bytes, request: Request, contacts: list[NameAddr], before: Any
    ) -> None:
        """Send the 2xx with our SDP; it is a target refresh too (§12.2.2)."""
        sip, transaction = self.sip, self._reinvite_tx
        self._reinvite_tx = self._reinvite_deferred = None
        if sip is None or transaction is None or transaction.final_sent:
            return
        if contacts:
            self.remote_contact = contacts[0].uri
        ok = Response.from_request(
            request,
            200,
            headers=[
                ("Contact", sip.contact_for(request.uri)),
                ("Allow", sip.allow_header),
                ("Supported", _SUPPORTED),
                *self.session_timer.answer(request),
                ("Content-Type", "application/sdp"),
            ],
            body=local_sdp,
        )
        transaction.respond(ok)
        self._restart_session_timer()
        # That 2xx carried our current Contact: the peer's target is fresh (§12.2.1.2).
        self._stale_contact = False
        self._ok_reinvite = True
        self._reoffered = not request.body
        self._retransmit_until_ack(ok)
        if not self._reoffered:
            self._media_changed(before)

    def _reinvite_refused(self, failure: Failure) -> None:
        """The media refused the offer (488 with a Warning, §14.2) or failed (500)."""
        self._reinvite_deferred = None
        if failure.check(CancelledError) or self._reinvite_tx is None:
            return
        code = self._failure_status(failure, "re-INVITE refused", "cannot apply re-INVITE")
        if code is not None:
            self._end_reinvite(code, str(getattr(failure.value, "reason", "") or failure.value))
        else:
            # An internal error: 500 without a Warning, so nothing internal is disclosed.
            self._end_reinvite(SIPStatus.SERVER_INTERNAL_ERROR)

    def _end_reinvite(self, code: int, reason: str | None = None) -> None:
        """Answer the pending re-INVITE with *code* and drop its media work; the call goes on."""
        transaction, deferred = self._reinvite_tx, self._reinvite_deferred
        self._reinvite_tx = self._reinvite_deferred = None
        if transaction is not None:
            headers = _warning(reason)
            transaction.respond(Response.from_request(transaction.request, code, headers=headers))
        if deferred is not None:
            deferred.cancel()

    def _reinvite_acked(self, ack: Request) -> None:
        """ACK of a re-INVITE's 2xx; with our offer in that 2xx it carries the answer (§13.2.1)."""
        self._ok_reinvite = False
        if self._reoffered:
            self._reoffered = False
            before = getattr(self.media, "negotiated", None)
            try:
                self.media.accept_answer(ack.body)
            except Exception as exc:
                log.info(
                    "call {call_id}: unusable SDP answer in ACK of re-INVITE: {exc}",
                    call_id=self.call_id,
                    exc=exc,
                )
                self._send_bye()
                return
            self._media_changed(before)
        if self._bye_after_ack:
            self._send_bye()

    def _media_changed(self, before: Any) -> None:
        """Tell the session (``media_changed(direction)``) when a re-INVITE changed the media."""
        after = getattr(self.media, "negotiated", None)
        hook = getattr(self.session, "media_changed", None)
        if after is not None and after != before and hook is not None:
            self._call_app(hook, after.direction)

    def _bye_received(self, request: Request, transaction: ServerTransaction) -> None:
        """RFC 3261 §15.1.2: 200 to the BYE (487 to a pending INVITE), stop media, hang up."""
        if self._pending_invite:
            assert self.invite_transaction is not None
            self.invite_transaction.respond(self._response(SIPStatus.REQUEST_TERMINATED))
            self.invite_transaction = None
        transaction.respond(Response.from_request(request, 200))
        self._end()
        self._fire_bye_deferreds()
        self._call_app(self.hangup_received)

    # -- outbound (UAC) ------------------------------------------------------------------

    def dial(
        self,
        target: str,
        *,
        session_class: type,
        follow_redirects: bool | None = None,
        **session_kwargs: Any,
    ) -> Deferred[Dialog]:
        """Place a call to *target*; the Deferred fires with this dialog once answered.

        Sends INVITE with our SDP offer (RFC 3261 §13.2.1), answers a 401/407
        once with the protocol's credentials (§22.2), retries once without
        SRTP when an SRTP offer is refused with 488/415/606 and the SRTP
        policy is "optional", ACKs the 2xx (§13.2.2.4), applies the answer and
        starts ``session_class(dialog=self, **session_kwargs)``.  Fails with
        :class:`CallFailed`.  Cancelling the Deferred before the answer sends
        CANCEL (§9.1) once a provisional response has arrived.

        A 3xx is followed (RFC 3261 §8.1.3.4): its Contacts are tried in ``q`` order,
        each with a new INVITE transaction (same Call-ID, From and To, next CSeq, the
        Contact as Request-URI), at most ``MAX_REDIRECT_TARGETS`` targets per dial (the
        dialled one included), none twice,
        never from ``sips:`` down to ``sip:``; ``CallFailed`` then carries the last final
        status.  *follow_redirects* (default: the class's ``follow_redirects``) False
        makes a 3xx fail the dial at once.
        """
        sip = self.sip
        if sip is None:
            raise ValueError("Dialog.dial() needs a protocol: Dialog(sip=protocol)")
        if self.state is not DialogState.INIT:
            raise RuntimeError("a Dialog places at most one call")
        # RFC 3261 §19.1.4 / §25.1: the URI goes out as given, not in SipURI's canonical
        # string (escaped "+", explicit default port, which would defeat RFC 3263 SRV).
        target = target.wire if isinstance(target, SipURI) else str(target)
        if not target.lower().startswith(("sip:", "sips:", "tel:")):
            raise InvalidURI(f"not a SIP, SIPS or tel URI: {target[:80]!r}")
        self._srtp = self._srtp_policy(target, explicit=True)
        self.uac = sip.aor
        self.remote_contact = None
        self.local_party = CallerID(f"<{sip.aor.aor}>;tag={self.local_tag}")
        self.remote_party = CallerID(f"<{target}>")
        self._target = target
        self._follow = self.follow_redirects if follow_redirects is None else follow_redirects
        self._tried = {self._target_key(target)}
        self._session_class = session_class
        self._session_kwargs = dict(session_kwargs)
        self.session_timer = self._new_session_timer()
        self._dial_deferred = Deferred(canceller=self._cancel_dial)
        self.state = DialogState.EARLY
        sip.register_dialog(self)
        self._new_media(None).addCallbacks(self._offer_ready, self._offer_failed)
        return self._dial_deferred

    @_call_boundary
    def _offer_ready(self, media: Any, new_cseq: bool = False) -> None:
        """Our SDP offer is ready: send the INVITE, unless the call was cancelled meanwhile."""
        if self.state is DialogState.TERMINATED or self._cancel_requested:
            media.stop()
            self._end()
            return
        self.media = media
        if new_cseq:
            self.outbound_cseq += 1
        self._send_invite()

    @_call_boundary
    def _offer_failed(self, failure: Failure) -> None:
        log.failure("call {call_id}: cannot set up media", failure, call_id=self.call_id)
        self._dial_failed(failure)

    def _send_invite(self, authorization: tuple[str, str] | None = None) -> None:
        sip = self.sip
        assert sip is not None and self.local_party is not None and self.remote_party is not None
        headers: list[tuple[str, str]] = []
        top_route = None
        if sip.outbound_proxy:
            headers.append(("Route", sip.outbound_proxy))
            top_route = _uri_of(sip.outbound_proxy)
        headers += [
            ("From", str(self.local_party)),
            ("To", str(self.remote_party)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.outbound_cseq} INVITE"),
            # RFC 3261 §8.1.1.8: a SIPS Request-URI or top Route needs a SIPS Contact.
            ("Contact", sip.contact_for(self._target, top_route)),
            ("Allow", sip.allow_header),
            ("Supported", _SUPPORTED),
            *self.session_timer.request_headers(),
            *self._extra_invite_headers,
            ("Content-Type", "application/sdp"),
        ]
        if authorization is not None:
            headers.append(authorization)
        invite = Request("INVITE", self._target, headers, body=self.media.local_sdp)
        self.invite_request = invite
        self._provisionals.clear()
        self._provisional_seen = False
        self._cancel_sent = False
        tx = sip.start_client_transaction(invite, on_provisional=self._provisional_received)
        self._invite_tx = tx
        tx.deferred.addCallbacks(self._final_response, self._dial_failed)

    def _provisional_received(self, response: Response) -> None:
        """A 1xx: learn the remote tag (early dialog, §12.1.2); send a CANCEL that was waiting;
        start early media from an 18x with SDP; tell the application (progress_received)."""
        code = response.status_code
        if code > 100 and response.remote_tag and self.remote_tag is None:
            self.remote_tag = response.remote_tag
        self._provisional_seen = True
        if self._cancel_requested and not self._cancel_sent:
            self._send_cancel()
            return
        if code > 100 and requires_reliable(response) and not self._prack(response):
            return
        if code > 100:
            self._early_media(response)
            if self.state is DialogState.EARLY:
                self._call_app(self.progress_received, code)

    def _prack(self, response: Response) -> bool:
        """PRACK the reliable 18x *response* (RFC 3262 §4); False when it is to be ignored:
        a retransmission, out of order (its RSeq not the next of its early dialog), or
        without a usable RSeq, Contact or Record-Route."""
        sip, invite = self.sip, self.invite_request
        assert sip is not None and invite is not None
        rseq = self._provisionals.accept(response)
        if rseq is None:
            return False
        try:
            prack = prack_for(invite, response, rseq, self.outbound_cseq + 1)
        except (SIPParseError, ValueError) as exc:
            log.info("call {call_id}: cannot PRACK {code}: {exc}", call_id=self.call_id,
                     code=response.status_code, exc=exc)
            return False
        self.outbound_cseq += 1
        self.send_logged(prack)
        return True

    def _early_media(self, response: Response) -> None:
        """RFC 3261 §13.2.1 / RFC 3960: the first 18x with an SDP answer starts this call's
        media with it, so the session hears ringback or announcements before the 200.

        Later 18x (other forks included) leave it as it is; the 2xx decides in the end
        (:meth:`_answered`).  An unusable early answer is logged and ignored.
        """
        content_type = (response.content_type or "").split(";")[0].strip().lower()
        if (
            self._early_sdp is not None
            or not response.body
            or content_type != "application/sdp"
            or self.media is None
            or self.session is not None
        ):
            return
        assert self._session_class is not None
        try:
            self.media.accept_answer(response.body)
        except Exception as exc:
            log.info("call {call_id}: unusable SDP in {code}: {exc}", call_id=self.call_id,
                     code=response.status_code, exc=exc)
            return
        self._early_sdp = response.body
        self._early_answer_reliable = requires_reliable(response)
        log.info("call {call_id}: early media from {code}", call_id=self.call_id,
                 code=response.status_code)
        try:
            self.session = self._session_class(dialog=self, **self._session_kwargs)
            self.media.start(self.session)
        except Exception:
            log.failure("call {call_id}: session failed to start", call_id=self.call_id)
            if self._dial_deferred is not None and not self._dial_deferred.called:
                self._dial_deferred.cancel()

    def _cancel_dial(self, deferred: Deferred[Dialog]) -> None:
        """Deferred.cancel(): CANCEL now if a provisional arrived, else when the first one does."""
        self._cancel_requested = True
        if self._provisional_seen and not self._cancel_sent:
            self._send_cancel()

    def _send_cancel(self) -> None:
        """CANCEL (RFC 3261 §9.1): same Request-URI, Call-ID, From, To, CSeq number and Via."""
        sip = self.sip
        invite = self.invite_request
        assert sip is not None and invite is not None and self._invite_tx is not None
        self._cancel_sent = True
        headers: list[tuple[str, str]] = [("Via", str(invite.via[0]))]
        headers += [("Route", r) for r in invite.headers.getlist("Route")]
        headers += [
            ("Max-Forwards", "70"),
            ("From", invite.headers["From"]),
            ("To", invite.headers["To"]),
            ("Call-ID", self.call_id),
            ("CSeq", f"{invite.cseq[0]} CANCEL"),
        ]
        cancel = Request("CANCEL", invite.uri, headers)
        sip.send_request(cancel, new_branch=False).addErrback(
            lambda f: log.info("CANCEL for {call_id} failed: {f}", call_id=self.call_id, f=f.value)
        )
        self._invite_tx.cancel_sent()

    @_call_boundary
    def _final_response(self, response: Response) -> None:
        code = response.status_code
        cancelled = self._dial_deferred is not None and self._dial_deferred.called
        if 200 <= code < 300:
            self._answered(response)
            return
        if not cancelled and code in (401, 407) and self._retry_with_credentials(response):
            return
        if not cancelled and code == 422 and self.session_timer.retry_after_422(response):
            # RFC 4028 §7.4: the INVITE again (next CSeq) asking for the 422's Min-SE.
            log.info("call {call_id}: 422, asking for a session interval of {n} s",
                     call_id=self.call_id, n=self.session_timer.min_se)
            self.outbound_cseq += 1
            self._auth_tried = False  # a proxy may challenge the new INVITE again
            self._send_invite()
            return
        if (
            not cancelled
            and code in _SRTP_REFUSALS
            and not self._insecure_tried
            and self._offer_is_secure()
            and self._srtp == "optional"
        ):
            self._insecure_tried = True
            log.info(
                "call {call_id}: {code} to SRTP offer, retrying RTP/AVP",
                call_id=self.call_id,
                code=code,
            )
            self._stop_media()
            self._new_media(None, secure=False).addCallbacks(
                self._offer_ready, self._offer_failed, callbackKeywords={"new_cseq": True}
            )
            return
        # A 3xx adds targets; any other failure but 6xx (global, §21.6) moves to the next one.
        redirected = 300 <= code < 400 or (self._redirect_queue and code < 600)
        if not cancelled and redirected and self._follow and self._redirect(response):
            return
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        self._dial_failed(Failure(CallFailed(code, response.phrase, retry_after=retry_after)))

    @staticmethod
    def _target_key(uri: str) -> str:
        """The form two targets compare in (RFC 3261 §19.1.4 canonical string, else as is)."""
        try:
            return str(SipURI.parse(uri))
        except (InvalidURI, ValueError):
            return uri

    def _redirect(self, response: Response) -> bool:
        """Try the next redirect target (RFC 3261 §8.1.3.4) after *response*, adding those of
        a 3xx first; False when there is none left or the dial has tried enough."""
        contacts: list[NameAddr] = []
        if response.status_code < 400:
            try:
                contacts = sorted(response.contact, key=_q_value, reverse=True)
            except SIPParseError as exc:
                log.info("call {call_id}: unusable Contact in {code}: {exc}",
                         call_id=self.call_id, code=response.status_code, exc=exc)
        secure = self._target[:5].lower() == "sips:"
        fresh: list[str] = []
        queued = {self._target_key(uri) for uri in self._redirect_queue}
        for contact in contacts:
            uri = contact.uri
            scheme = uri[:5].lower()
            if not scheme.startswith(("sip:", "sips:")) or (secure and scheme != "sips:"):
                continue
            key = self._target_key(uri)
            if key in self._tried or key in queued:
                continue
            queued.add(key)
            fresh.append(uri)
            if len(fresh) >= MAX_REDIRECT_TARGETS:
                break
        # depth first: the latest redirect's targets before those still queued; no more
        # kept than could ever be tried
        self._redirect_queue[:0] = fresh
        del self._redirect_queue[MAX_REDIRECT_TARGETS:]
        if not self._redirect_queue or len(self._tried) >= MAX_REDIRECT_TARGETS:
            return False
        target = self._redirect_queue.pop(0)
        self._tried.add(self._target_key(target))
        log.info(
            "call {call_id}: {code} {phrase}, trying {target}",
            call_id=self.call_id, code=response.status_code, phrase=response.phrase,
            target=target[:120],
        )
        self._target = target
        self.remote_tag = None
        self._auth_tried = False
        if self._early_sdp is not None:
            # the redirecting party's early media is not this target's
            self._early_sdp = None
            self._early_answer_reliable = False
            self.session = None
            self._stop_media()
            self._new_media(None).addCallbacks(
                self._offer_ready, self._offer_failed, callbackKeywords={"new_cseq": True}
            )
            return True
        self.outbound_cseq += 1
        self._send_invite()
        return True

    def _srtp_policy(self, uri: Any, *, explicit: bool) -> str:
        """SRTP policy of this call: the config's, "required" with a sips: URI (ours or
        *uri*; issue 14 finding 11).  With *explicit*, a config that explicitly says
        "off"/"optional" for a sips: call raises ValueError."""
        from voiptwisted.sdp.policy import srtp_policy

        sip = self.sip
        assert sip is not None
        config = sip.media_config
        return srtp_policy(
            getattr(config, "srtp", None), uri, sip.aor,
            explicit=explicit and getattr(config, "srtp_explicit", False),
        )

    def _offer_is_secure(self) -> bool:
        sdp = getattr(self.media, "local_sdp", b"") or b""
        return b"RTP/SAVP" in sdp

    def _retry_with_credentials(self, response: Response) -> bool:
        """Answer one 401/407 challenge (RFC 3261 §22.2) with a new CSeq; False if we can't.

        The protocol's `Credentials` decide: only allowed realms, the strongest
        algorithm, no qop-less MD5 by default.  A refusal is one log line and
        the call fails with the challenge's status.
        """
        from voiptwisted.sip.digest import DigestError

        sip = self.sip
        credentials = getattr(sip, "credentials", None)
        if self._auth_tried or credentials is None or self.invite_request is None:
            return False
        self._auth_tried = True
        try:
            authorization = credentials.answer(response, self.invite_request)
        except DigestError as exc:
            log.warn("call {call_id}: {exc}", call_id=self.call_id, exc=exc)
            return False
        self.outbound_cseq += 1
        self._send_invite(authorization)
        return True

    def _answered(self, response: Response) -> None:
        """2xx to our INVITE (§13.2.2.4, §12.1.2): dialog state, ACK, answer, media."""
        sip = self.sip
        assert sip is not None and self.invite_request is not None
        self.remote_tag = response.remote_tag
        self.remote_party = CallerID(response.headers["To"])
        try:
            self.remote_contact = remote_target(response.contact)
            unusable = None
        except SIPParseError as exc:
            # ACK and BYE go to the To URI instead; the call is not taken (§12.1.2).
            self.remote_contact, unusable = None, exc
        self.route_set = list(reversed(response.headers.getlist("Record-Route")))
        self.remote_allow = _methods(response)
        self.state = DialogState.CONFIRMED
        self.session_timer.answered(response)
        self._restart_session_timer()
        self._ack = self._ack_for_2xx(self.invite_request)
        sip.send_stateless(self._ack)
        deferred = self._dial_deferred
        assert deferred is not None
        if deferred.called:
            # The CANCEL crossed the 200 (§9.1): the call is up, so end it with BYE.
            self._send_bye()
            return
        if unusable is not None:
            log.info("call {call_id}: 2xx refused: {exc}", call_id=self.call_id, exc=unusable)
            self._send_bye()
            deferred.errback(CallFailed(502, "Unusable Contact in 2xx"))
            return
        early = self._early_sdp is not None and self.session is not None
        try:
            if not early:
                self.media.accept_answer(response.body)
            elif response.body and response.body != self._early_sdp and not self._early_updated:
                # §13.2.1: the 2xx carries the answer; a different one updates the media.
                before = getattr(self.media, "negotiated", None)
                self.media.accept_answer(response.body)
                self._media_changed(before)
        except Exception as exc:
            code = getattr(exc, "status_code", 488)
            log.info("call {call_id}: unusable SDP answer: {exc}", call_id=self.call_id, exc=exc)
            self._send_bye()
            deferred.errback(CallFailed(code if isinstance(code, int) else 488))
            return
        if early:
            deferred.callback(self)
            return
        failure = self._start_session()
        if failure is not None:
            deferred.errback(failure)
            return
        deferred.callback(self)

    @_call_boundary
    def response_retransmitted(self, response: Response) -> None:
        """A 2xx for our INVITE after the first one (RFC 3261 §13.2.2.4).

        A retransmission gets the same ACK again; a 2xx from another fork (a
        different To tag) is ACKed and that extra dialog ended with BYE.
        """
        sip = self.sip
        refresh_ack = self._refresh_ack
        if (
            refresh_ack is not None
            and sip is not None
            and response.cseq[0] == refresh_ack.cseq[0]
            and response.remote_tag == self.remote_tag
        ):
            sip.send_message(refresh_ack)
            return
        if self._ack is None or sip is None or response.status_code >= 300:
            return
        if response.remote_tag == self.remote_tag:
            sip.send_message(self._ack)
            return
        assert self.invite_request is not None and self.local_party is not None
        log.info("call {call_id}: 2xx from another fork, ending it", call_id=self.call_id)
        try:
            target = remote_target(response.contact)
        except SIPParseError:
            target = None
        fork = Dialog(
            sip=sip,
            call_id=self.call_id,
            local_tag=self.local_tag,
            remote_tag=response.remote_tag,
            remote_contact=target,
            route_set=list(reversed(response.headers.getlist("Record-Route"))),
            local_party=str(self.local_party),
            remote_party=response.headers["To"],
            outbound_cseq=self.invite_request.cseq[0],
        )
        fork.state = DialogState.CONFIRMED
        sip.send_stateless(fork._ack_for_2xx(self.invite_request))
        fork._send_bye()

    @_call_boundary
    def _dial_failed(self, failure: Failure) -> None:
        if failure.check(TransactionTimeout):
            failure = Failure(CallFailed(408, "Request Timeout"))
        self._end()
        deferred = self._dial_deferred
        if deferred is not None and not deferred.called:
            deferred.errback(failure)
        elif not failure.check(CallFailed, CancelledError):
            log.info("call {call_id} ended: {f}", call_id=self.call_id, f=failure.value)

    # -- in-dialog requests and BYE ------------------------------------------------------

    def _target_and_routes(self) -> tuple[str, list[str]]:
        """Request-URI and Route values for an in-dialog request (RFC 3261 §12.2.1.1)."""
        target = self.remote_contact
        if target is None:
            assert self.remote_party is not None
            target = _uri_of(str(self.remote_party))
        routes = list(self.route_set)
        if routes:
            first = _uri_of(routes[0])
            try:
                loose = "lr" in SipURI.parse(first).parameters
            except (InvalidURI, ValueError):
                loose = True
            if not loose:
                # Strict router: it becomes the Request-URI, the remote target the last Route.
                return first.split(";", 1)[0], [*routes[1:], f"<{target}>"]
        return target, routes

    def _in_dialog_request(self, method: str, *, cseq: int | None = None) -> Request:
        """A request inside the dialog: From/To with tags, route set, CSeq (§12.2.1.1)."""
        if cseq is None:
            self.outbound_cseq += 1
            cseq = self.outbound_cseq
        uri, routes = self._target_and_routes()
        headers: list[tuple[str, str]] = [("Route", r) for r in routes]
        headers += [
            ("Max-Forwards", "70"),
            ("From", str(self.local_party)),
            ("To", str(self.remote_party)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        return Request(method, uri, headers)

    def _ack_for_2xx(self, invite: Request) -> Request:
        """The ACK for a 2xx to *invite* (RFC 3261 §13.2.2.4).

        Built like any in-dialog request, but with the INVITE's CSeq number
        and the same credentials as the INVITE (a proxy that challenged the
        INVITE would otherwise refuse to forward the ACK).
        """
        ack = self._in_dialog_request("ACK", cseq=invite.cseq[0])
        for name in ("Authorization", "Proxy-Authorization"):
            for value in invite.headers.getlist(name):
                ack.headers.add(name, value)
        return ack

    def bye(self) -> Deferred[None]:
        """End the call (RFC 3261 §15.1.1); fires when the BYE is answered or timed out.

        Media stops at once and the dialog is dropped either way.  Before the
        ACK of our 2xx arrived the BYE waits for it (§15: a UAS must not send
        BYE before).  An unanswered inbound call is rejected with 480; an
        outbound call not yet answered is cancelled (CANCEL once a provisional
        response arrived, §9.1).  With nothing to end (never dialled nor
        received, or already ended) it fires at once.  Cancelling the Deferred
        only stops the wait: the BYE goes on and the call ends all the same.
        """
        deferred: Deferred[None] = Deferred()
        if self.state in (DialogState.TERMINATED, DialogState.INIT):
            deferred.callback(None)
            return deferred
        if self._pending_invite:
            self.reject(SIPStatus.TEMPORARILY_UNAVAILABLE)
            deferred.callback(None)
            return deferred
        if self.state is DialogState.EARLY and self._dial_deferred is not None:
            self._dial_deferred.cancel()
            deferred.callback(None)
            return deferred
        self._bye_deferreds.append(deferred)
        if self._ok is not None:
            self._bye_after_ack = True
        else:
            self._send_bye()
        return deferred

    def _send_bye(self) -> None:
        """Send BYE once, stop media now, drop the dialog when the BYE transaction ends."""
        if self._bye_sent or self.state is DialogState.TERMINATED or self.sip is None:
            return
        self._bye_sent = True
        self._stop_ok_retransmission()
        self._stop_media()
        request = self._in_dialog_request("BYE")

        def done(result: Response | Failure) -> None:
            if isinstance(result, Failure):
                log.info("BYE for {call_id}: {f}", call_id=self.call_id, f=result.value)
            elif result.status_code >= 300:
                log.info("BYE for {call_id} answered {code} {phrase}", call_id=self.call_id,
                         code=result.status_code, phrase=result.phrase)
            self._end()
            self._fire_bye_deferreds()

        answered = self.send_in_dialog(request)
        answered.addTimeout(self.BYE_ACK_TIMEOUT.total_seconds(), self.sip.timers.clock)
        answered.addBoth(done)

    def send_in_dialog(self, request: Request) -> Deferred[Response]:
        """Send the in-dialog *request* (BYE, re-INVITE, OPTIONS ...); fire with its final
        response.

        A 401/407 is answered once (RFC 3261 §8.1.3.5, §22.2): the same request with a
        new CSeq in this dialog and credentials for the challenging realm, if the UA's
        ``Credentials`` answer that realm.  A second challenge, or a realm they refuse,
        is the final response.  ACK and CANCEL are never retried (§22.1: they cannot be
        challenged).
        """
        sip = self.sip
        if sip is None:
            raise RuntimeError("send_in_dialog needs a UA: Dialog(sip=...)")
        deferred = sip.send_request(request)
        if request.method in ("ACK", "CANCEL"):
            return deferred
        return deferred.addCallback(self._answer_in_dialog_challenge, request)

    def send_logged(self, request: Request) -> Deferred[None]:
        """:meth:`send_in_dialog` for a request whose outcome matters only to the log
        (PRACK, NOTIFY): a failure or a refusal (3xx-6xx) is one info line; the Deferred
        fires with None either way."""

        def answered(result: Response | Failure) -> None:
            if isinstance(result, Failure):
                log.info("call {call_id}: {method} failed: {f}", call_id=self.call_id,
                         method=request.method, f=result.value)
            elif result.status_code >= 300:
                log.info("call {call_id}: {method} answered {code}", call_id=self.call_id,
                         method=request.method, code=result.status_code)

        return self.send_in_dialog(request).addBoth(answered)

    def _answer_in_dialog_challenge(
        self, response: Response, request: Request
    ) -> Response | Deferred[Response]:
        from voiptwisted.sip.digest import DigestError

        sip = self.sip
        credentials = getattr(sip, "credentials", None)
        if response.status_code not in (401, 407) or sip is None or credentials is None:
            return response
        try:
            name, value = credentials.answer(response, request)
        except DigestError as exc:
            log.warn("call {call_id}: {method} challenged: {exc}", call_id=self.call_id,
                     method=request.method, exc=exc)
            return response
        skip = {"via", "cseq", "authorization", "proxy-authorization"}
        self.outbound_cseq += 1
        retry = Request(
            request.method,
            request.uri,
            [(n, v) for n, v in request.headers.items() if n.lower() not in skip],
            body=request.body,
        )
        retry.headers["CSeq"] = f"{self.outbound_cseq} {request.method}"
        retry.headers.add(name, value)
        log.info("call {call_id}: {method} challenged ({code}), retrying with credentials",
                 call_id=self.call_id, method=request.method, code=response.status_code)
        return sip.send_request(retry)

    def when_ended(self) -> Deferred[None]:
        """A Deferred that fires with None once this dialog is TERMINATED.

        Whichever side ended the call (our BYE, theirs, CANCEL, a failed or
        refused dial, a timeout, a dead flow): it never fails.  Fires at once
        when the dialog has already ended.  Each call returns a new Deferred,
        so several waiters do not share one callback chain.
        """
        deferred: Deferred[None] = Deferred()
        if self.state is DialogState.TERMINATED:
            deferred.callback(None)
        else:
            self._ended_deferreds.append(deferred)
        return deferred

    def _fire_bye_deferreds(self) -> None:
        waiting, self._bye_deferreds = self._bye_deferreds, []
        for deferred in waiting:
            deferred.callback(None)

    # -- teardown ------------------------------------------------------------------------

    def _stop_media(self) -> None:
        media, self.media = self.media, None
        if media is not None:
            try:
                media.stop()
            except Exception:
                log.failure("call {call_id}: media.stop() failed", call_id=self.call_id)

    def _end(self) -> None:
        """Forget the call: timers, media, registration with the protocol."""
        if self.state is DialogState.TERMINATED:
            return
        self.state = DialogState.TERMINATED
        # §15.1.2: requests still pending on an ending dialog are answered, 487 recommended.
        self._end_reinvite(SIPStatus.REQUEST_TERMINATED)
        self._end_update()
        self._end_transfers()
        self._stop_ok_retransmission()
        self._cancel_expiry()
        if self._reliable is not None:
            self._reliable.stop()
        if self.sip is not None:
            self.sip.timers.cancel(self._orphan_timer)
            self.sip.timers.cancel(self._refresh_timer)
        self._orphan_timer = self._refresh_timer = None
        self._cancel_session_timer()
        self._stop_media()
        if self.sip is not None:
            self.sip.drop_dialog(self)
        waiting, self._ended_deferreds = self._ended_deferreds, []
        for deferred in waiting:
            deferred.callback(None)

    def connection_lost(self) -> None:
        """The signalling flow died (issue 3 item 3).

        Calls not yet established end.  Established ones keep their media until
        BYE or until ``orphan_timeout`` passes without a new flow adopting them
        (:meth:`adopt`); then the call ends as if the remote had hung up.
        """
        if self.state is DialogState.EARLY:
            self.invite_transaction = None
            self._end()
            if self.inbound:
                self._call_app(self.hangup_received)
        elif self.state is DialogState.CONFIRMED and self.sip is not None:
            # A refresh waiting to be retried belongs to the dead flow; the next flow
            # starts its own (refresh_target).
            self.sip.timers.cancel(self._refresh_timer)
            self._refresh_timer = None
            self._orphan_timer = self.sip.timers.call_later(self.orphan_timeout, self._orphaned)

    @property
    def adoptable(self) -> bool:
        """Established, ACKed and not ending: a new flow may carry this call on."""
        return (
            self.state is DialogState.CONFIRMED
            and self._ok is None
            and not self._bye_sent
            and self._orphan_timer is not None
        )

    def adopt(self, sip: IUserAgent) -> None:
        """Move this call to the new flow *sip* (same UA, reconnected): BYE goes out there.

        The orphan timer is dropped only when the media's RTP inactivity timeout bounds
        the call (issue 17 item 2); otherwise it moves to the new flow, so an adopted
        call the far end can no longer reach still ends.
        """
        old, timer = self.sip, self._orphan_timer
        self._orphan_timer = None
        if old is not None:
            old.timers.cancel(timer)
            old.drop_dialog(self)
        self.sip = sip
        sip.register_dialog(self)
        if timer is not None and not getattr(self.media, "bounded", False):
            remaining = max(0.0, timer.getTime() - sip.timers.clock.seconds())
            self._orphan_timer = sip.timers.call_later(remaining, self._orphaned)
        # The session timer (RFC 4028) keeps its deadlines on the new flow's clock.
        refresh, expiry = self._session_refresh_timer, self._session_expiry_timer
        if old is not None:
            old.timers.cancel(refresh)
            old.timers.cancel(expiry)
        now = sip.timers.clock.seconds()
        if refresh is not None:
            self._session_refresh_timer = sip.timers.call_later(
                max(0.0, refresh.getTime() - now), self._session_refresh
            )
        if expiry is not None:
            self._session_expiry_timer = sip.timers.call_later(
                max(0.0, expiry.getTime() - now), self._session_expired
            )

    @_call_boundary
    def _orphaned(self) -> None:
        self._orphan_timer = None
        if self.sip is not None and self.sip.is_connected:
            log.info(
                "call {call_id}: adopted {t} s after its flow died and not bounded by an "
                "RTP timeout, ending it",
                call_id=self.call_id,
                t=self.orphan_timeout,
            )
            self.bye()
            self._call_app(self.hangup_received)
            return
        log.info(
            "call {call_id}: no signalling flow for {t} s, ending it",
            call_id=self.call_id,
            t=self.orphan_timeout,
        )
        self._end()
        self._fire_bye_deferreds()
        self._call_app(self.hangup_received)

    # -- target refresh after a flow change (RFC 5626 §4.2.1, RFC 3261 §12.2) -------------

    @property
    def _refreshing_invite(self) -> bool:
        """Our target-refresh re-INVITE is waiting for its final response (§14.1)."""
        tx = self._refresh_tx
        return tx is not None and tx.request.method == "INVITE"

    def refresh_target(self) -> None:
        """Tell the peer our current Contact: this call now runs over a new flow.

        RFC 5626 §4.2.1: once the flow to the registrar is replaced, the far end's
        in-dialog requests still go to the Contact of the dead flow (a proxy answers them
        477 or 408) until a target refresh request (RFC 3261 §12.2) gives it the new one.
        That is an UPDATE without a body when the peer's Allow lists UPDATE (RFC 3311
        §5.1), else a re-INVITE offering the media as it is (the same SDP and ``o=``
        version, RFC 3264 §8).  A 2xx makes the call reachable again, so its orphan timer
        goes; 481 or 408 (a timeout too) ends the call with BYE (§12.2.1.2); 491 is
        retried after the §14.1 random delay, as is a refresh that would cross an INVITE
        transaction in progress either way; an UPDATE answered 405 or 501 is sent again
        as a re-INVITE (and refreshes are re-INVITEs from then on); any other refusal
        leaves the call as it is (§14.1), logged.  Only confirmed calls are refreshed: an
        early dialog ends with its flow (its INVITE transaction cannot outlive the
        connection, and without 100rel
        there is no UPDATE before the answer).
        """
        if self.state is not DialogState.CONFIRMED or self._bye_sent or self.sip is None:
            return
        self._stale_contact = True
        self._refresh_attempts = 0
        if self._refresh_tx is None and self._refresh_timer is None:
            self._send_refresh()

    def _send_refresh(self) -> None:
        self._refresh_timer = None
        sip = self.sip
        if (
            not (self._stale_contact or self._timer_refresh_due)
            or self.state is not DialogState.CONFIRMED
            or self._bye_sent
            or sip is None
            or not sip.is_connected
        ):
            return
        if self._ok is not None or self._reinvite_tx is not None:
            # §14.1: no INVITE while another INVITE transaction is in progress either way.
            self._retry_refresh()
            return
        usable = "UPDATE" in self.remote_allow and not self._update_unusable
        method = "UPDATE" if usable else "INVITE"
        base = self._in_dialog_request(method)
        routes = base.headers.getlist("Route")
        uris = [base.uri, _uri_of(routes[0]) if routes else None]
        if self.invite_request is not None:
            uris.append(self.invite_request.uri)
        headers = [
            *base.headers.items(),
            # §12.1.1 / §8.1.1.8: a SIPS dialog keeps a SIPS Contact.
            ("Contact", sip.contact_for(*uris)),
            ("Allow", sip.allow_header),
            # no 100rel: the 18x of a refresh are not PRACKed (only the call's INVITE's)
            ("Supported", _SUPPORTED_REFRESH),
            *self.session_timer.request_headers(),
        ]
        body = b""
        if method == "INVITE":
            try:
                body = self.media.refresh_offer()
            except Exception:
                log.failure("call {call_id}: no offer for a target refresh", call_id=self.call_id)
                return
            headers.append(("Content-Type", "application/sdp"))
        request = Request(method, base.uri, headers, body=body)
        log.info(
            "call {call_id}: {method} ({why})",
            call_id=self.call_id,
            method=method,
            why="target refresh" if self._stale_contact else "session refresh, RFC 4028 §10",
        )
        tx = sip.start_client_transaction(request)
        self._refresh_tx = tx
        tx.deferred.addCallbacks(
            self._refresh_answered,
            self._refresh_failed,
            callbackArgs=(tx,),
            errbackArgs=(tx,),
        )

    def _refresh_answered(self, response: Response, tx: ClientTransaction) -> None:
        """The final response to our target refresh (§12.2.1.2, §14.1)."""
        if self._refresh_tx is tx:
            self._refresh_tx = None
        request, code = tx.request, response.status_code
        if 200 <= code < 300:
            self._refreshed(request, response)
        elif code == 491 and self.state is DialogState.CONFIRMED:
            self._refresh_attempts += 1
            if self._refresh_attempts > self.refresh_retries:
                log.warn(
                    "call {call_id}: target refresh still in glare after {n} retries, given up",
                    call_id=self.call_id,
                    n=self.refresh_retries,
                )
                return
            self._retry_refresh()
        elif code in (408, 481):
            self._refresh_ends_call(f"{code} {response.phrase}")
        elif (
            code in (405, 501)
            and request.method == "UPDATE"
            and self.state is DialogState.CONFIRMED
        ):
            # RFC 4028 §9: a refresh is a re-INVITE or an UPDATE; this peer lists UPDATE
            # but does not take it, so the same refresh goes as a re-INVITE.
            self._update_unusable = True
            self._send_refresh()
        elif (
            code == 422
            and self.state is DialogState.CONFIRMED
            and self.session_timer.retry_after_422(response)
        ):
            # RFC 4028 §7.4: refresh again asking for the 422's Min-SE.
            self._send_refresh()
        else:
            log.info(
                "call {call_id}: target refresh refused ({code} {phrase}); call unchanged",
                call_id=self.call_id,
                code=code,
                phrase=response.phrase,
            )

    def _refreshed(self, request: Request, response: Response) -> None:
        """2xx: the remote target from its Contact (§12.2.1.2), the ACK of a re-INVITE
        (§13.2.2.4, sent even when the call ended meanwhile), the answer applied."""
        sip = self.sip
        assert sip is not None
        confirmed = self.state is DialogState.CONFIRMED and response.remote_tag == self.remote_tag
        if confirmed:
            try:
                contacts = response.contact
            except SIPParseError:
                contacts = []
            if contacts:
                self.remote_contact = contacts[0].uri
        if request.method == "INVITE":
            self._refresh_ack = self._ack_for_2xx(request)
            sip.send_stateless(self._refresh_ack)
        if not confirmed or self._bye_sent:
            return
        stale, self._stale_contact = self._stale_contact, False
        sip.timers.cancel(self._orphan_timer)
        self._orphan_timer = None
        if request.method == "INVITE":
            try:
                self.media.accept_answer(response.body)
            except Exception as exc:
                self._refresh_ends_call(f"unusable SDP answer: {exc}")
                return
        # RFC 4028 §7.2 / §10: every 2xx to a re-INVITE or UPDATE refreshes the session.
        self._timer_refresh_due = False
        self.session_timer.answered(response)
        self._restart_session_timer()
        if stale:
            log.info("call {call_id}: target refreshed, reachable again", call_id=self.call_id)

    def _refresh_failed(self, failure: Failure, tx: ClientTransaction) -> None:
        """No final response: a timeout is a 408 (§12.2.1.2); a dead flow leaves the call
        to its orphan timer and the next flow's refresh."""
        if self._refresh_tx is tx:
            self._refresh_tx = None
        if failure.check(TransactionTimeout):
            self._refresh_ends_call("no response")
        else:
            log.info(
                "call {call_id}: target refresh lost with its flow: {f}",
                call_id=self.call_id,
                f=failure.value,
            )

    def _refresh_ends_call(self, why: str) -> None:
        if self.state is not DialogState.CONFIRMED or self._bye_sent:
            return
        log.info("call {call_id}: target refresh failed ({why}), hanging up",
                 call_id=self.call_id, why=why)
        self.bye()
        self._call_app(self.hangup_received)

    def _retry_refresh(self) -> None:
        """Send the refresh again later: RFC 3261 §14.1's random delay, 2.1-4 s when we own
        the Call-ID (we sent the INVITE that made the dialog), else 0-2 s, in 10 ms steps."""
        sip = self.sip
        assert sip is not None
        if self.inbound:
            delay = secrets.randbelow(201) / 100
        else:
            delay = (210 + secrets.randbelow(191)) / 100
        sip.timers.cancel(self._refresh_timer)
        self._refresh_timer = sip.timers.call_later(delay, self._send_refresh)

    # -- session timer (RFC 4028) ----------------------------------------------------------

    def _new_session_timer(self) -> SessionTimer:
        """A session timer asking for the configured interval (``session_expires`` of the
        media config, default :data:`~voiptwisted.sip.session_timer.SESSION_EXPIRES`)."""
        config = self.sip.media_config if self.sip is not None else None
        return SessionTimer(int(getattr(config, "session_expires", SESSION_EXPIRES)))

    def _restart_session_timer(self) -> None:
        """A 2xx refreshed the session (RFC 4028 §10): our refresh at half the interval
        when we are the refresher, and the BYE for an unrefreshed session, start over."""
        sip = self.sip
        self._cancel_session_timer()
        if sip is None:
            return
        refresh, expiry = self.session_timer.refresh_after, self.session_timer.expires_after
        if refresh is not None:
            self._session_refresh_timer = sip.timers.call_later(refresh, self._session_refresh)
        if expiry is not None:
            self._session_expiry_timer = sip.timers.call_later(expiry, self._session_expired)

    def _cancel_session_timer(self) -> None:
        if self.sip is not None:
            self.sip.timers.cancel(self._session_refresh_timer)
            self.sip.timers.cancel(self._session_expiry_timer)
        self._session_refresh_timer = self._session_expiry_timer = None

    @_call_boundary
    def _session_refresh(self) -> None:
        """Half the session interval has passed and we are the refresher (RFC 4028 §10):
        an UPDATE when the peer allows it, else a re-INVITE with the SDP unchanged (same
        ``o=`` version), through the target-refresh machinery (491 retried, 408/481 BYE)."""
        self._session_refresh_timer = None
        if self.state is not DialogState.CONFIRMED or self._bye_sent:
            return
        self._timer_refresh_due = True
        self._refresh_attempts = 0
        if self._refresh_tx is None and self._refresh_timer is None:
            self._send_refresh()

    @_call_boundary
    def _session_expired(self) -> None:
        """No refresh came in time (RFC 4028 §10): the session is over, end it with BYE."""
        self._session_expiry_timer = None
        if self.state is not DialogState.CONFIRMED or self._bye_sent:
            return
        log.info(
            "call {call_id}: session expired after {n} s without a refresh, hanging up",
            call_id=self.call_id,
            n=self.session_timer.interval,
        )
        self.bye()
        self._call_app(self.hangup_received)

    def _call_app(self, function: Any, *args: Any) -> None:
        """Run application code; an exception is logged with the Call-ID and ends the call."""
        try:
            function(*args)
        except Exception:
            log.failure("call {call_id}: application error", call_id=self.call_id)
            self._abort()

    def _internal_error(self, where: str, exc: Exception) -> None:
        """An exception escaped *where* (a timer or callback of this call): end the call.

        One log line; then 500 to a pending INVITE, a failed dial, or BYE, as for an
        application error (:meth:`_abort`).  When that cannot be done either (the
        request cannot even be built) or the error came from the BYE itself, the call
        is torn down locally, so nothing of it stays registered on the flow.
        """
        log.error(
            "call {call_id}: internal error in {where}: {error}; ending the call",
            call_id=self.call_id, where=where, error=f"{type(exc).__name__}: {exc}",
        )
        bye_sent = self._bye_sent
        with contextlib.suppress(Exception):  # the local teardown below covers it
            self._abort()
        tx = self._invite_tx
        cancelling = self._cancel_requested and tx is not None and not tx.deferred.called
        ending = (self._bye_sent and not bye_sent) or self._bye_after_ack or cancelling
        if self.state is not DialogState.TERMINATED and not ending:
            self.invite_transaction = None
            self._end()
            self._fire_bye_deferreds()

    def _abort(self) -> None:
        """End this call after an application error: 500 before answer, BYE after."""
        if self._pending_invite:
            self.reject(SIPStatus.SERVER_INTERNAL_ERROR)
        elif self.state is DialogState.CONFIRMED:
            if self._ok is not None:
                self._bye_after_ack = True
            else:
                self._send_bye()
        elif self.state is DialogState.EARLY and self._dial_deferred is not None:
            self._dial_deferred.cancel()
        else:
            self._end()
