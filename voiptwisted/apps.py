"""The built-in call handlers behind ``twistd voip --app``: echo, reject, play and record.

Each is an ``IDialog`` (a ``Dialog`` subclass); ``dialog_for_app`` turns the option's
text into the class the service routes inbound calls to and uses for ``--dial``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from twisted.logger import Logger

from voiptwisted.media.session import EchoSession, PlaybackSession, RecordingSession
from voiptwisted.sip.dialog import Dialog

log = Logger()


class EchoDialog(Dialog):
    """Answer every call and send back what the caller says (at most 60 ms later)."""

    session_class: ClassVar[type] = EchoSession
    session_kwargs: ClassVar[dict[str, Any]] = {}

    def call_received(self) -> None:
        """Ring, then answer with ``session_class``."""
        log.info(
            "call {call_id} from {caller}: answering with {session}",
            call_id=self.call_id,
            caller=self.remote_party,
            session=self.session_class.__name__,
        )
        self.ringing()
        self.answer(session_class=self.session_class, **self.session_kwargs)


class RejectDialog(Dialog):
    """Reject every call with 486 Busy Here (the base ``Dialog`` behaviour, named)."""


def dialog_for_app(app: str) -> type[Dialog]:
    """Return the dialog class for an ``--app`` value.

    ``echo`` and ``reject`` name fixed classes; ``play:PATH`` plays a WAV file to the
    caller and hangs up; ``record:DIR`` records each call into DIR (created owner-only if
missing).  Raises
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
        os.makedirs(arg, mode=0o700, exist_ok=True)
        return type(
            "RecordDialog",
            (EchoDialog,),
            {"session_class": RecordingSession, "session_kwargs": {"directory": arg}},
        )
    raise ValueError(f"unknown app {app!r}: use one of echo, reject, play:PATH, record:DIR")
