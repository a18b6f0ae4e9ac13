"""Call transfer: REFER (RFC 3515), ``Refer-Sub`` (RFC 4488) and ``Replaces`` (RFC 3891).

The syntax (``Refer-To`` with an embedded ``Replaces``, ``message/sipfrag`` bodies, the
``Replaces`` header) and the state of the transfers of one dialog live here.
:class:`TransferMixin` is a base class of :class:`voiptwisted.sip.dialog.Dialog`: it
answers the REFER and NOTIFY requests of the dialog, runs the transfer a REFER asks for
(``transfer_received``, reported with NOTIFYs) and sends REFERs (``transfer``).
:func:`replaced_dialog` is the RFC 3891 §3 match the UA core applies to an INVITE with
``Replaces``.  Every wait is bounded by a timer on the dialog's ``sip.timers``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from voiptwisted.sip.headers import NameAddr, SIPParseError, split_commas
from voiptwisted.sip.message import Request, Response
from voiptwisted.sip.status import SIPStatus

__all__ = [
    "MAX_REFER_TO",
    "TRANSFER_TIMEOUT",
    "Replaces",
    "TransferFailed",
    "TransferMixin",
    "parse_refer_to",
    "parse_sipfrag",
    "refer_to_value",
    "replaced_dialog",
    "sipfrag",
]

log = Logger()

#: Longest Refer-To or Replaces value we read, in characters (a URI with a Replaces
#: takes about 200); longer gets 400.
MAX_REFER_TO = 2048
#: Seconds a transfer may take, either side: the subscription a REFER creates lasts this
#: long (its ``expires``); a transfer call not answered by then is cancelled and reported
#: 408, and a REFER we sent without a final NOTIFY by then fails with 408.
TRANSFER_TIMEOUT = 120.0
#: Characters left as they are in a header value embedded in a URI (RFC 3261 §25.1
#: ``hvalue``: ``hnv-unreserved`` and ``unreserved``); everything else is %-escaped.
_HVALUE_SAFE = "[]/?:+$-_.!~*'()"
#: The content type of NOTIFY bodies for the refer event (RFC 3515 §2.4.5, RFC 3420).
SIPFRAG = "message/sipfrag;version=2.0"


class TransferFailed(Exception):
    """A transfer we asked for (``Dialog.transfer``) did not get a final report.

    ``status_code`` is the refusal of the REFER (e.g. 403, 405, 481), 408 when no final
    NOTIFY came within :data:`TRANSFER_TIMEOUT`, 487 when the subscription ended (or the
    call did) without one.
    """

    def __init__(self, status_code: int, phrase: str | None = None) -> None:
        self.status_code = int(status_code)
        self.phrase = phrase or SIPStatus.phrase_for(self.status_code)
        super().__init__(f"{self.status_code} {self.phrase}")


class Replaces(NamedTuple):
    """A ``Replaces`` value (RFC 3891 §6.1): the dialog a new INVITE takes the place of.

    ``to_tag`` is the tag of the UA receiving the INVITE (its local tag), ``from_tag``
    the other party's (RFC 3891 §3).
    """

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    @classmethod
    def parse(cls, value: str) -> Replaces:
        """Parse ``callid;to-tag=..;from-tag=..[;early-only]``; SIPParseError if malformed."""
        if len(value) > MAX_REFER_TO:
            raise SIPParseError("Replaces too long")
        call_id, *params = value.strip(" \t").split(";")
        tags: dict[str, str] = {}
        early_only = False
        for param in params:
            name, equals, tag = param.partition("=")
            name = name.strip(" \t").lower()
            if name == "early-only" and not equals:
                early_only = True
            elif name in ("to-tag", "from-tag") and equals and name not in tags:
                tags[name] = tag.strip(" \t")
        call_id = call_id.strip(" \t")
        if not call_id or not tags.get("to-tag") or not tags.get("from-tag"):
            raise SIPParseError(f"Replaces needs a Call-ID, to-tag and from-tag: {value[:60]!r}")
        return cls(call_id, tags["to-tag"], tags["from-tag"], early_only)

    def __str__(self) -> str:
        text = f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}"
        return text + ";early-only" if self.early_only else text

    @classmethod
    def of(cls, dialog: Any) -> Replaces:
        """The Replaces that names *dialog* (one of ours) to its remote party (RFC 3891 §3:
        seen from that party, our tag is the from-tag, its own the to-tag)."""
        return cls(dialog.call_id, dialog.remote_tag, dialog.local_tag)


def refer_to_value(uri: str, replaces: Replaces | None = None) -> str:
    """A Refer-To value for *uri*, with *replaces* embedded as a URI header (RFC 3515 §2.1,
    RFC 3891 §1: ``<sip:c@host?Replaces=call%40id%3Bto-tag%3D1%3Bfrom-tag%3D2>``)."""
    uri = uri.split("?", 1)[0]
    if replaces is None:
        return f"<{uri}>"
    return f"<{uri}?Replaces={quote(str(replaces), safe=_HVALUE_SAFE)}>"


def parse_refer_to(values: list[str]) -> tuple[str, Replaces | None]:
    """The target of a REFER's Refer-To and the Replaces embedded in it (RFC 3515 §2.1).

    Exactly one value (RFC 3515 §2.4.1); the URI headers other than Replaces are dropped
    (the referrer does not get to put headers of its choice into our INVITE).  Raises
    SIPParseError (400) when there is not exactly one value or it is malformed.
    """
    if len(values) != 1 or len(values[0]) > MAX_REFER_TO:
        raise SIPParseError("a REFER needs exactly one Refer-To value")
    parts = split_commas(values[0])
    if len(parts) != 1:
        raise SIPParseError("a REFER needs exactly one Refer-To value")
    uri, _, embedded = NameAddr.parse(parts[0]).uri.partition("?")
    replaces = None
    for header in embedded.split("&") if embedded else ():
        name, _, value = header.partition("=")
        if unquote(name).strip().lower() == "replaces":
            if replaces is not None:
                raise SIPParseError("more than one Replaces in Refer-To")
            replaces = Replaces.parse(unquote(value))
    return uri, replaces


def sipfrag(status_code: int, phrase: str | None = None) -> bytes:
    """A ``message/sipfrag`` body holding one status line (RFC 3515 §2.4.5, RFC 3420)."""
    phrase = phrase or SIPStatus.phrase_for(status_code)
    return f"SIP/2.0 {int(status_code)} {phrase}\r\n".encode()


def parse_sipfrag(body: bytes) -> tuple[int, str] | None:
    """The status code and phrase of a sipfrag's first line, None when it has none."""
    line = body[:256].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    version, _, rest = line.partition(" ")
    code, _, phrase = rest.partition(" ")
    if version.upper() != "SIP/2.0" or len(code) != 3 or not code.isdigit():
        return None
    number = int(code)
    return (number, phrase.strip()) if 100 <= number < 700 else None


def _event(request: Request) -> tuple[str, str | None]:
    """The package and ``id`` of an Event header (RFC 6665 §8.2.1), lower-cased package."""
    value = request.headers.get("Event") or ""
    package, *params = value.split(";")
    event_id = None
    for param in params:
        name, _, param_value = param.partition("=")
        if name.strip().lower() == "id":
            event_id = param_value.strip()
    return package.strip().lower(), event_id


def _terminated(request: Request) -> bool:
    """Whether a NOTIFY's Subscription-State is ``terminated`` (RFC 6665 §8.2.3)."""
    value = request.headers.get("Subscription-State") or ""
    return value.split(";", 1)[0].strip().lower() == "terminated"


def replaced_dialog(
    request: Request, find: Callable[[str, str, str], Any]
) -> tuple[Any, int | None]:
    """The dialog an INVITE's ``Replaces`` names, or the response refusing it (RFC 3891 §3).

    *find(call_id, local_tag, remote_tag)* looks one of our dialogs up.  Returns
    ``(dialog, None)`` to accept, ``(None, code)`` to refuse: 400 for more than one or a
    malformed Replaces, 481 when no dialog matches or the match is an early dialog we did
    not initiate, 603 when it has ended, 486 when ``early-only`` names a confirmed one.
    """
    values = request.headers.getlist("Replaces")
    if len(values) != 1:
        return None, 400
    try:
        replaces = Replaces.parse(values[0])
    except SIPParseError:
        return None, 400
    dialog = find(replaces.call_id, replaces.to_tag, replaces.from_tag)
    if dialog is None or dialog.remote_tag != replaces.from_tag:
        return None, 481
    state = dialog.state.value
    if state == "terminated" or dialog.ending:
        return None, 603
    if state == "early":
        return (None, 481) if dialog.inbound else (dialog, None)
    if state != "confirmed":
        return None, 481
    if replaces.early_only:
        return None, 486
    return dialog, None


class _Received:
    """A REFER we accepted: its subscription (unless Refer-Sub: false) and its call."""

    def __init__(self, request: Request, subscribed: bool, event_id: str | None) -> None:
        self.request = request
        self.subscribed = subscribed
        self.event_id = event_id
        self.call: Any = None
        self.done = False
        self.timer: Any = None


class _Sent:
    """A REFER we sent: the Deferred its final sipfrag status fires, and its id."""

    def __init__(self, deferred: Deferred[int], cseq: int, first: bool) -> None:
        self.deferred = deferred
        self.cseq = cseq
        #: The first REFER of the dialog: its NOTIFYs may come without ``id`` (§2.4.6).
        self.first = first
        self.timer: Any = None


class TransferMixin:
    """REFER and NOTIFY in a dialog (RFC 3515, RFC 4488), and INVITE with Replaces taking
    over a call (RFC 3891); a base class of ``Dialog``.

    One transfer at a time each way per dialog: a REFER while one of the far end's is in
    progress gets 491 Request Pending; ``transfer`` while one of ours is raises.
    """

    #: Seconds a transfer may take (see :data:`TRANSFER_TIMEOUT`).
    transfer_timeout: float = TRANSFER_TIMEOUT
    #: For an INVITE with Replaces: the dialog it replaces, set by the UA core.
    replacing: Any = None
    _refer_in: _Received | None = None
    _refer_out: _Sent | None = None
    _refers_received = 0
    _refers_sent = 0

    # Dialog's attributes (and its _in_dialog_request, send_in_dialog, send_logged, bye,
    # answer and _call_app) are used here: this class is only ever a base of Dialog.
    sip: Any
    state: Any
    call_id: str
    local_tag: str
    remote_tag: str | None
    remote_contact: str | None
    remote_party: Any
    inbound: bool
    _session_class: type | None
    _session_kwargs: dict[str, Any]
    _bye_sent: bool
    _ok: Any
    _extra_invite_headers: list[tuple[str, str]]

    @property
    def ending(self) -> bool:
        """The call is over or going: our BYE sent, or the dialog terminated."""
        return self._bye_sent or self.state.value == "terminated"

    # -- the application hook --------------------------------------------------------------

    def transfer_received(self, target: str, replaces: Replaces | None = None) -> Any:
        """The remote party asked us (REFER, RFC 3515) to call *target*; we said 202.

        Return a Deferred that fires once the new call is answered (and fails with
        ``CallFailed`` carrying the status when it is not): its outcome is reported to the
        remote party in the final NOTIFY, and on success this call ends with BYE.  Return
        None (or a Deferred firing None) to decline: reported as 603 Declined.  An
        exception is logged and reported as 500.  *replaces* is the Replaces the
        Refer-To carried (attended transfer): the new INVITE carries it.

        The default calls :meth:`transfer_call`: the target, with this call's session
        class and arguments, through the same UA.
        """
        return self.transfer_call(target, replaces)

    def transfer_call(self, target: str, replaces: Replaces | None = None) -> Deferred[Any]:
        """Dial *target* as a new call of this dialog's class over the same UA, with this
        call's session class and arguments (and *replaces* in its INVITE, RFC 3891 §4)."""
        if self._session_class is None:
            raise RuntimeError("transfer_call needs a call with a session class")
        call = type(self)(sip=self.sip)
        if replaces is not None:
            call._extra_invite_headers.append(("Replaces", str(replaces)))
        received = self._refer_in
        if received is not None:
            referred_by = received.request.headers.get("Referred-By")
            if referred_by:
                # RFC 3892 §3: the referee copies Referred-By into the triggered request.
                call._extra_invite_headers.append(("Referred-By", referred_by[:MAX_REFER_TO]))
            received.call = call
        return call.dial(target, session_class=self._session_class, **self._session_kwargs)

    # -- receiving REFER (RFC 3515 §2.4) ---------------------------------------------------

    def _refer_received(self, request: Request, transaction: Any) -> None:
        """A REFER in this dialog: 202 and the transfer, or its refusal.

        RFC 3515 §2.4.1/§2.4.2: exactly one Refer-To (else 400); a target we cannot call
        (not sip:, sips: or tel:) gets 416.  A call not established yet (or ending) gets
        491 (or 481); one transfer at a time (491 while one runs, RFC 3261 §21.4.27).
        ``Refer-Sub: false`` (RFC 4488 §4) is honoured: the 202 says so and no NOTIFY
        follows.  Otherwise NOTIFY ``SIP/2.0 100 Trying`` at once (RFC 3515 §2.4.4), then
        the final status with ``Subscription-State: terminated;reason=noresource``.
        """
        if self.ending:
            transaction.respond(Response.from_request(request, 481))
            return
        if self.state.value != "confirmed" or self._ok is not None or self._refer_in is not None:
            transaction.respond(Response.from_request(request, 491))
            return
        target, replaces = parse_refer_to(request.headers.getlist("Refer-To"))
        if not target.lower().startswith(("sip:", "sips:", "tel:")):
            transaction.respond(Response.from_request(request, 416))
            return
        sub = (request.headers.get("Refer-Sub") or "").strip().lower()
        subscribed = sub != "false"
        self._refers_received += 1
        # §2.4.6: NOTIFYs of every REFER but the dialog's first carry id = its CSeq.
        event_id = str(request.cseq[0]) if self._refers_received > 1 else None
        received = _Received(request, subscribed, event_id)
        self._refer_in = received
        headers = [("Contact", self.sip.contact_for(request.uri))]
        if not subscribed:
            headers.append(("Refer-Sub", "false"))
        transaction.respond(Response.from_request(request, 202, headers=headers))
        log.info("call {call_id}: REFER accepted, transferring", call_id=self.call_id)
        received.timer = self.sip.timers.call_later(
            self.transfer_timeout, self._transfer_expired, received
        )
        self._notify(received, 100)
        deferred = maybeDeferred(self.transfer_received, target, replaces)
        deferred.addCallbacks(
            lambda call: self._transfer_done(received, 200 if call is not None else 603),
            self._transfer_failed,
            errbackArgs=(received,),
        )

    def _transfer_failed(self, failure: Failure, received: _Received) -> None:
        """The transfer call failed: its final status is reported (a cancelled one 487, an
        error 500, logged), unless the transfer already ended (timed out)."""
        if received.done:
            return
        code = getattr(failure.value, "status_code", None)
        if failure.check(CancelledError):
            code = SIPStatus.REQUEST_TERMINATED
        elif not (isinstance(code, int) and 300 <= code < 700):
            log.failure("call {call_id}: transfer failed", failure, call_id=self.call_id)
            code = SIPStatus.SERVER_INTERNAL_ERROR
        self._transfer_done(received, code)

    def _transfer_expired(self, received: _Received) -> None:
        """No final status within ``transfer_timeout``: the call is cancelled, 408 reported."""
        received.timer = None
        call = received.call
        self._transfer_done(received, SIPStatus.REQUEST_TIMEOUT)
        if call is not None:
            call.bye()

    def _transfer_done(self, received: _Received, code: int) -> None:
        """The transfer's final status: the last NOTIFY, then BYE of this call on success."""
        if received.done:
            return
        received.done = True
        if self.sip is not None:
            self.sip.timers.cancel(received.timer)
        received.timer = None
        if self._refer_in is received:
            self._refer_in = None
        log.info("call {call_id}: transfer ended {code}", call_id=self.call_id, code=code)
        sent = self._notify(received, code)
        if not 200 <= code < 300:
            return
        if sent is None:
            self._transferred()
        else:
            # The BYE goes once the final NOTIFY is answered, so it does not overtake it.
            sent.addBoth(lambda _: self._transferred())

    def _transferred(self) -> None:
        """RFC 5589 §6: a successful transfer ends the call it came from."""
        if not self.ending:
            self.bye()

    def _notify(self, received: _Received, code: int) -> Deferred[Any] | None:
        """NOTIFY the refer event with *code* as sipfrag (RFC 3515 §2.4.4, §2.4.5), unless
        the REFER said ``Refer-Sub: false`` or the call is over."""
        if not received.subscribed or self.ending or self.sip is None:
            return None
        request = self._in_dialog_request("NOTIFY")
        event = "refer" if received.event_id is None else f"refer;id={received.event_id}"
        if code < 200:
            remaining = max(1, int(self.transfer_timeout))
            state = f"active;expires={remaining}"
        else:
            state = "terminated;reason=noresource"
        for name, value in (
            ("Event", event),
            ("Subscription-State", state),
            ("Contact", self.sip.contact_for(request.uri)),
            ("Content-Type", SIPFRAG),
        ):
            request.headers.add(name, value)
        request.body = sipfrag(code)
        return self.send_logged(request)

    # -- sending REFER (RFC 3515 §2.4.3), receiving its NOTIFYs ---------------------------

    def transfer(self, target: Any) -> Deferred[int]:
        """Ask the remote party to call *target* (REFER, RFC 3515): a blind transfer.

        *target* is a SIP/SIPS/tel URI (str or SipURI), or another of our confirmed
        dialogs for an attended transfer: the Refer-To is then that dialog's remote target
        with its Replaces embedded (RFC 3891 §4, RFC 5589 §7), so the remote party's
        INVITE takes that call's place.  Each NOTIFY is answered 200; the Deferred fires
        with the final status the NOTIFYs report (200 when the transfer succeeded, 486 ...
        when the target refused), or fails with :class:`TransferFailed` when the REFER is
        refused or no final status comes within ``transfer_timeout``.  The call stays up:
        hang it up (``bye``) once the transfer succeeded, as RFC 5589 §6 suggests.
        """
        if self.state.value != "confirmed" or self.ending or self.sip is None:
            raise RuntimeError("transfer() needs an established call")
        if isinstance(target, TransferMixin):
            if target.state.value != "confirmed" or target.remote_tag is None:
                raise ValueError("an attended transfer needs another established call")
            uri = target.remote_contact or NameAddr.parse(str(target.remote_party)).uri
            refer_to = refer_to_value(uri, Replaces.of(target))
        else:
            uri = getattr(target, "wire", None) or str(target)
            if not uri.lower().startswith(("sip:", "sips:", "tel:")):
                raise ValueError(f"not a SIP, SIPS or tel URI: {uri[:80]!r}")
            refer_to = refer_to_value(uri)
        if self._refer_out is not None:
            raise RuntimeError("a transfer of this call is already in progress")
        request = self._in_dialog_request("REFER")
        request.headers.add("Refer-To", refer_to)
        request.headers.add("Referred-By", f"<{self.sip.aor.aor}>")
        request.headers.add("Contact", self.sip.contact_for(request.uri))
        self._refers_sent += 1
        sent = _Sent(Deferred(), request.cseq[0], self._refers_sent == 1)
        self._refer_out = sent
        sent.timer = self.sip.timers.call_later(
            self.transfer_timeout, self._transfer_finished, sent,
            TransferFailed(408, "No final NOTIFY"),
        )
        self.send_in_dialog(request).addCallbacks(
            self._refer_answered, self._refer_lost, callbackArgs=(sent,), errbackArgs=(sent,)
        )
        return sent.deferred

    def attended_transfer(self, other: Any) -> Deferred[int]:
        """:meth:`transfer` to *other*, another of our calls: the remote party replaces it."""
        return self.transfer(other)

    def _refer_answered(self, response: Response, sent: _Sent) -> None:
        code = response.status_code
        if code >= 300:
            self._transfer_finished(sent, TransferFailed(code, response.phrase))
        elif (response.headers.get("Refer-Sub") or "").strip().lower() == "false":
            # RFC 4488 §4: no NOTIFY will tell; the 2xx is all we learn.
            self._transfer_finished(sent, code)

    def _refer_lost(self, failure: Failure, sent: _Sent) -> None:
        """No response to the REFER (timeout, or the flow died): 408 (RFC 3261 §8.1.3.1)."""
        self._transfer_finished(sent, TransferFailed(408, "No response to REFER"))

    def _transfer_finished(self, sent: _Sent, result: int | TransferFailed) -> None:
        if self._refer_out is not sent:
            return
        self._refer_out = None
        if self.sip is not None:
            self.sip.timers.cancel(sent.timer)
        sent.timer = None
        if isinstance(result, TransferFailed):
            sent.deferred.errback(result)
        else:
            sent.deferred.callback(result)

    def _notify_received(self, request: Request, transaction: Any) -> None:
        """A NOTIFY of the refer event for a REFER of ours (RFC 3515 §2.4.5): 200, and its
        sipfrag's final status fires ``transfer``'s Deferred.

        RFC 6665 §4.1.3: a NOTIFY for no subscription of ours gets 481, another event
        package 489 Bad Event.
        """
        sent = self._refer_out
        package, event_id = _event(request)
        if package != "refer":
            transaction.respond(Response.from_request(request, 489))
            return
        ours = sent is not None and (
            event_id == str(sent.cseq) or (event_id is None and sent.first)
        )
        if not ours or sent is None:
            transaction.respond(Response.from_request(request, 481))
            return
        transaction.respond(Response.from_request(request, 200))
        status = parse_sipfrag(request.body)
        if status is not None and status[0] >= 200:
            self._transfer_finished(sent, status[0])
        elif _terminated(request):
            self._transfer_finished(sent, TransferFailed(487, "Subscription ended"))

    def _end_transfers(self) -> None:
        """The call ends: the transfers of this dialog end with it (timers cancelled)."""
        received, self._refer_in = self._refer_in, None
        if received is not None:
            received.done = True
            if self.sip is not None:
                self.sip.timers.cancel(received.timer)
        sent = self._refer_out
        if sent is not None:
            self._transfer_finished(sent, TransferFailed(487, "Call ended"))

    # -- INVITE with Replaces (RFC 3891 §3) ------------------------------------------------

    def _take_over(self) -> None:
        """This new call replaces ``replacing``: answer it at once with the replaced call's
        session class and arguments (the user already accepted that call)."""
        old = self.replacing
        session_class = old._session_class
        if session_class is None:
            self._call_app(self.call_received)  # type: ignore[attr-defined]
            return
        log.info("call {call_id} replaces call {old}", call_id=self.call_id, old=old.call_id)
        self.answer(session_class=session_class, **old._session_kwargs)

    def _replaced(self) -> None:
        """The new call is confirmed: the one it replaces ends (BYE, or CANCEL while early)."""
        old, self.replacing = self.replacing, None
        if old is not None and not old.ending:
            old.bye()
