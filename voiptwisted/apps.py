"""The built-in call handlers behind ``twistd voip --app``: echo, reject, play and record.

Each is an ``IDialog`` (a ``Dialog`` subclass); ``dialog_for_app`` turns the option's
text into the class the service routes inbound calls to and uses for ``--dial``.

An answered call is three info lines: who calls (the caller masked, as
``CallerID``'s ``repr``; in full only with ``--trace-sip``), answered, and ended
with its duration and who ended it.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from twisted.logger import Logger

from voiptwisted.media.session import EchoSession, PlaybackSession, RecordingSession
from voiptwisted.sip.dialog import Dialog, DialogState
from voiptwisted.sip.uri import CallerID

__all__ = ["EchoDialog", "RejectDialog", "dialog_for_app", "shown_party"]

log = Logger()


def shown_party(party: str | None, *, full: bool = False) -> str:
    """A caller or callee (From/To value or URI) as info lines show it.

    Masked as ``CallerID``'s ``repr`` (the last four characters of the user and the
    host: a log is not a call record); the whole value only when *full* (``--trace-sip``,
    whose SIP trace shows it anyway).
    """
    if party is None:
        return "an unknown party"
    return str(party) if full else repr(CallerID(str(party)))


class EchoDialog(Dialog):
    """Answer every call and send back what the caller says (at most 60 ms later)."""

    session_class: ClassVar[type] = EchoSession
    session_kwargs: ClassVar[dict[str, Any]] = {}

    _answered_at: float | None = None
    _ended_by: str | None = None

    def _now(self) -> float:
        return float(self.sip.clock.seconds())

    def call_received(self) -> None:
        """Ring, then answer with ``session_class``."""
        full = bool(getattr(self.sip, "trace", False))
        log.info(
            "call {call_id} from {caller}: answering with {session}",
            call_id=self.call_id,
            caller=shown_party(self.remote_party, full=full),
            session=self.session_class.__name__,
        )
        self.when_ended().addCallback(self._log_end)
        self.ringing()
        self.answer(session_class=self.session_class, **self.session_kwargs)

    def ack_received(self, ack: Any) -> None:
        """The caller's ACK: once media runs, the call is answered (logged once)."""
        super().ack_received(ack)
        if self._answered_at is None and self.session is not None:
            self._answered_at = self._now()
            log.info("call {call_id} answered", call_id=self.call_id)

    def request_received(self, request: Any, transaction: Any) -> None:
        """A BYE that ends the call was the caller's (the end line says so)."""
        self._by_caller(request.method == "BYE", super().request_received, request, transaction)

    def cancel_received(self, cancel: Any) -> None:
        """A CANCEL that ends the call before the answer was the caller's."""
        self._by_caller(True, super().cancel_received, cancel)

    def _by_caller(self, ending: bool, handle: Any, *args: Any) -> None:
        # when_ended() fires while *handle* runs: name who ended it first, and take it
        # back if the request did not end the call (an out-of-order CSeq, a re-INVITE's).
        mark = ending and self._ended_by is None
        if mark:
            self._ended_by = "the caller"
        handle(*args)
        if mark and self.state is not DialogState.TERMINATED:
            self._ended_by = None

    def bye(self) -> Any:
        """Hang up from our side (the session ended, or the service stops)."""
        if self._ended_by is None:
            self._ended_by = "us"
        return super().bye()

    def _log_end(self, _: object) -> None:
        by = self._ended_by or "a timeout or failure"
        if self._answered_at is None:
            log.info("call {call_id} ended unanswered, by {by}", call_id=self.call_id, by=by)
            return
        log.info(
            "call {call_id} ended after {seconds:.1f} s, by {by}",
            call_id=self.call_id,
            seconds=self._now() - self._answered_at,
            by=by,
        )


class RejectDialog(Dialog):
    """Reject every call with 486 Busy Here (the base ``Dialog`` behaviour, named)."""


def dialog_for_app(app: str) -> type[Dialog]:
    """Return the dialog class for an ``--app`` value.

    ``echo`` and ``reject`` name fixed classes; ``play:PATH`` plays a WAV file to the
    caller and hangs up; ``record:DIR`` records each call into DIR.  Raises
    ``ValueError`` naming the problem (unknown app, missing file or directory).
    """
    kind, _, arg = app.partition(":")
    if app == "echo":
        return EchoDialog
    if app == "reject":
        return RejectDialog
    if kind == "play" and arg:
        if not os.path.isfile(arg):
            raise ValueError(f"play:{arg}: no such WAV file")
        return type(
            "PlayDialog",
            (EchoDialog,),
            {"session_class": PlaybackSession, "session_kwargs": {"path": arg}},
        )
    if kind == "record" and arg:
        os.makedirs(arg, exist_ok=True)
        return type(
            "RecordDialog",
            (EchoDialog,),
            {"session_class": RecordingSession, "session_kwargs": {"directory": arg}},
        )
    raise ValueError(f"unknown app {app!r}: use one of echo, reject, play:PATH, record:DIR")
