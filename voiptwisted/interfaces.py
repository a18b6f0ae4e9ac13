"""The interfaces application code implements: ``IDialog`` (a call), ``ISession`` (its media).

Everything between the network and these interfaces belongs to voiptwisted;
everything behind them belongs to the application.  An exception raised by an
implementation is logged with the call's Call-ID and ends that call (500 before
answer, BYE after), never the connection or the service.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IDialog", "ISession"]


class IDialog(Interface):
    """A SIP dialog (RFC 3261 §12): one call between us and a remote party.

    ``voiptwisted.sip.Dialog`` implements it; subclass it and override
    ``call_received`` (and optionally ``hangup_received``) to handle calls.
    """

    call_id = Attribute("The dialog's Call-ID (str).")
    local_tag = Attribute("Our tag in From/To (str).")
    remote_tag = Attribute("The remote party's tag (str), or None before it is known.")
    remote_party = Attribute("The remote party's From/To value as a CallerID, or None.")
    session = Attribute("The ISession running this call's media, or None before answer.")
    created = Attribute("When the dialog object was made (an aware UTC datetime).")
    from_header = Attribute("The From value of our in-dialog requests, or None before known.")
    to_header = Attribute("The To value of our in-dialog requests, or None before known.")
    headers = Attribute("From, To and Call-ID of the dialog, those known (dict).")

    def call_received() -> None:
        """Called by the protocol once for each new inbound INVITE.

        The implementation decides what happens to the call: it may call
        ``ringing()``, ``answer(session_class=...)`` or ``reject()`` now or
        later (from a timer, a Deferred ...).  The base class rejects with
        486 Busy Here.
        """

    def ringing() -> None:
        """Send 180 Ringing (with our To tag) for the pending inbound INVITE.

        Optional; idempotent once the call is answered or rejected.
        """

    def session_progress(session_class: type | None = None, **session_kwargs: object) -> None:
        """Send 183 Session Progress with our SDP for the pending inbound INVITE.

        Reliably (RFC 3262) when the INVITE requires ``100rel``: ``answer()`` then keeps
        the media agreed here and sends its 200 once the 183 is PRACKed.  With
        *session_class*, that session (our early media, RFC 3960) starts once the 183's
        offer/answer is agreed, before the answer, and runs for the whole call.  Optional.
        """

    def answer(*, session_class: type, **session_kwargs: object) -> None:
        """Accept the pending inbound INVITE and start its media.

        Negotiates the SDP answer (RFC 3264) from the INVITE's offer, opens the
        call's RTP socket, creates ``session_class(dialog=self,
        **session_kwargs)`` and sends 200 OK, retransmitted until the ACK
        arrives (RFC 3261 §13.3.1.4).  When no codec matches, the call is
        rejected with 488 instead.
        """

    def reject(status_code: int = 486) -> None:
        """Reject the pending inbound INVITE with a final 3xx-6xx response (default 486)."""

    def bye() -> object:
        """End an established call: send BYE, stop the media, forget the dialog.

        Returns a Deferred that fires (with None) when the BYE is answered or
        has timed out (64*T1); the dialog is gone either way.
        """

    def dial(target: str, *, session_class: type, **session_kwargs: object) -> object:
        """Place an outbound call to *target* (a SIP/SIPS URI string or SipURI).

        Returns a Deferred that fires with this dialog once the call is
        answered (200 OK received and ACKed, media running), or fails with
        ``voiptwisted.sip.CallFailed`` carrying the final status code.
        Cancelling the Deferred before the answer sends CANCEL.
        """

    def hangup_received() -> None:
        """Called when the remote party ends the call (BYE, or CANCEL before answer).

        Media is already stopped when this runs; use it for application teardown.
        """

    def progress_received(status_code: int) -> None:
        """Called for each provisional response (101-199) to a call we placed (``dial``).

        *status_code* is e.g. 180 (ringing) or 183 (session progress).  When the
        first 18x carries SDP, the call's media already runs with it (early media,
        RFC 3261 §13.2.1, RFC 3960): ``session`` hears ringback or announcements
        before the answer.  Optional; the base class does nothing.
        """

    def transfer_received(target: str, replaces: object = None) -> object:
        """Called when the remote party transfers this call (REFER, RFC 3515): call *target*.

        voiptwisted has already answered the REFER 202 and, unless it said
        ``Refer-Sub: false`` (RFC 4488), sent NOTIFY ``SIP/2.0 100 Trying``.  Return a
        Deferred that fires once the new call is answered, or fails with ``CallFailed``
        carrying its status; the final NOTIFY reports that status (RFC 3515 §2.4.5) and
        on success this call ends with BYE.  Return None to decline (603).  *replaces*
        (a ``voiptwisted.sip.refer.Replaces``, for an attended transfer) goes into the new
        INVITE (RFC 3891).  The base class dials *target* over the same UA with this
        call's session class and arguments (``transfer_call``).
        """

    def transfer(target: object) -> object:
        """Transfer the remote party of this established call to *target* (REFER).

        *target* is a URI (blind transfer) or another of our calls (attended: the
        Refer-To carries its ``Replaces``, RFC 3891).  Returns a Deferred firing with the
        final status the remote party's NOTIFYs report (200 on success), failing with
        ``voiptwisted.sip.refer.TransferFailed`` when the REFER is refused or no final
        status arrives in time.
        """


class ISession(Interface):
    """The media of one call: decoded audio and DTMF in, audio and DTMF out.

    ``voiptwisted.media.Session`` implements it; subclass it and override
    ``audio_received`` / ``dtmf_received`` (and ``start``/``stop``).  Instances
    are created by ``IDialog.answer``/``IDialog.dial`` as
    ``session_class(dialog=dialog, **session_kwargs)``.

    Audio is a one-dimensional ``numpy.ndarray`` of ``int16`` samples, mono,
    at ``sample_rate`` Hz: the negotiated codec's audio rate (8000 for G.711,
    16000 for G.722, 48000 for Opus; 20 ms is ``sample_rate / 50`` samples).  A
    session with a ``use_call_rate(rate) -> int`` method is told the call's rate
    (and any change of it by a re-INVITE, before ``media_changed``) and returns
    the rate it works at; otherwise its ``sample_rate`` is the rate it wants.
    Either way voiptwisted resamples between the codec's rate and the session's.
    """

    dialog = Attribute("The IDialog this session belongs to.")
    sample_rate = Attribute(
        "Sample rate (Hz) of audio passed to audio_received/send_audio (see above)."
    )
    stats = Attribute("Per-call RTP statistics: packets sent/received, lost, jitter.")
    stop_reason = Attribute(
        "Why the media stopped, set by voiptwisted just before stop() is called: "
        '``"ended"`` (BYE from either side, CANCEL, a dead flow, shutdown), '
        '``"rtp-timeout"`` (no RTP or RTCP from the peer for ``MediaConfig.rtp_timeout`` '
        'seconds; voiptwisted sent BYE) or ``"hold-timeout"`` (the same on hold, '
        "``rtp_hold_timeout``).  None while the media runs.  Optional: an object that "
        "cannot take the attribute is simply not told."
    )

    def start() -> None:
        """Called once when media starts (after the ACK inbound, after the 200 outbound)."""

    def stop() -> None:
        """Called once when the call's media stops, whichever side ended it.

        It takes no argument (sessions written before ``stop_reason`` keep working):
        read ``self.stop_reason`` to know why, e.g. to tell a vanished peer
        (``"rtp-timeout"``) from a normal hang-up.
        """

    def audio_received(samples: object) -> None:
        """Called with each decoded 20 ms frame from the remote party, in playout order."""

    def dtmf_received(digit: str) -> None:
        """Called exactly once per key the remote party pressed: ``0-9 * # A-D``.

        Keys come as RFC 4733 events in the media or as SIP INFO (``application/dtmf-relay``
        or ``application/dtmf``, RFC 6086); a call takes them the way its first key came,
        so a press the peer sends both ways is reported once.
        """

    def media_changed(direction: str) -> None:
        """Called after the remote party changed the call's media with a re-INVITE.

        Hold, resume, a new media address or codec (RFC 3261 §14, RFC 3264 §8):
        voiptwisted has already applied it.  *direction* is the stream's
        direction as seen by us: ``"sendrecv"``, ``"recvonly"`` (the remote put
        us on hold: what we send is not transmitted), ``"sendonly"`` or
        ``"inactive"``.  Optional: sessions without this method are not told.
        """

    def send_audio(samples: object) -> None:
        """Queue int16 mono audio at ``sample_rate`` for sending; returns at once.

        The process-wide 20 ms pacer takes one frame per tick from the queue;
        silence is not sent while the queue is empty.
        """

    def send_dtmf(digits: str) -> None:
        """Queue RFC 4733 telephone-events for *digits* (``0-9 * # A-D``)."""

    def hang_up() -> object:
        """End the call from the media side (sends BYE). Returns the dialog's Deferred."""


class IUserAgent(Interface):
    """The UA seam: everything a dialog may ask of the SIP stack it belongs to.

    ``voiptwisted.sip.core.UserAgentCore`` implements it without I/O, and
    ``SessionInitiationProtocol`` provides it by delegating to its core, so
    ``Dialog(sip=protocol)`` keeps working.  A dialog talks to the stack only
    through these names (it imports no adapter); everything behind them —
    Via and branch building, the transaction table, the wire — belongs to the
    core and its adapter.
    """

    aor = Attribute("Our address of record (SipURI): From of the calls we place.")
    reactor = Attribute(
        "The injected reactor: IReactorTime for every timer, IReactorUDP for calls' RTP."
    )
    clock = Attribute("The same reactor, as the IReactorTime everything times against.")
    timers = Attribute(
        "The Timers set (voiptwisted.sip.transaction.Timers) on that clock: dialog timers"
        " registered there are counted and cancelled with the stack's."
    )
    credentials = Attribute(
        "The digest Credentials (voiptwisted.sip.digest.Credentials) answering 401/407 to"
        " our requests for the realms they allow, or None."
    )
    outbound_proxy = Attribute("A Route value for our out-of-dialog requests, or None.")
    is_connected = Attribute(
        "Whether the adapter's transport is up: a request started now goes out (bool)."
    )
    allow_header = Attribute("The Allow value: the methods the core handles (RFC 3261 §20.5).")
    media_class = Attribute("The CallMedia implementation calls use (a seam for tests).")
    media_config = Attribute("The MediaConfig for calls.")
    media_host = Attribute("The address to put in SDP (public, learned, or local).")

    def contact_for(*uris: str | None) -> str:
        """Our Contact value, in its ``sips:`` form when any of *uris* is a SIPS URI
        (RFC 3261 §8.1.1.8, §12.1.1)."""

    def start_client_transaction(request: object) -> object:
        """Send *request* in a new client transaction (RFC 3261 §17.1) and return it.

        The core adds Via (with a new branch unless the keyword ``new_branch``
        is False, as for CANCEL, §9.1) and Max-Forwards; the keyword
        ``on_provisional`` is called with each 1xx.  The transaction's
        ``deferred`` fires with the final response, or fails on timeout or
        when the flow is gone.
        """

    def send_request(request: object) -> object:
        """:meth:`start_client_transaction`, returning only its Deferred final response
        (keywords ``provisional_callback`` and ``new_branch``)."""

    def send_stateless(request: object) -> None:
        """Send a request outside any transaction (the ACK for a 2xx, §13.2.2.4): new Via."""

    def send_message(message: object) -> None:
        """Send an already complete message as it is (a 2xx retransmitted by its dialog)."""

    def options_response(request: object) -> object:
        """The 200 to an OPTIONS: our capabilities (RFC 3261 §11.2)."""

    def method_not_allowed_response(request: object) -> object:
        """A 405 with Allow (RFC 3261 §8.2.1)."""

    def register_dialog(dialog: object) -> None:
        """Route in-dialog requests and responses to *dialog* until :meth:`drop_dialog`."""

    def drop_dialog(dialog: object) -> None:
        """Forget *dialog* (idempotent)."""
