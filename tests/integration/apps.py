"""IDialog classes that ``twistd voip --dialog tests.integration.apps.<Class>`` loads in tests."""

from __future__ import annotations

from voiptwisted.media.session import EchoSession
from voiptwisted.sip.dialog import Dialog


class PatientEcho(EchoSession):
    """An echo that keeps up to a second queued instead of 60 ms.

    On a loaded machine a stalled reactor hands the echo a burst of frames at once, and
    the plain echo drops all but the last three of it by design (that policy has its own
    tests, and tests/integration/test_media_load.py runs the plain echo under load).  The
    tests that correlate what a peer hears with what it said are about the SIP and media
    path, so they echo everything: a stall then delays the echo instead of cutting it.
    """

    max_delay_frames = 50


class PatientEchoDialog(Dialog):
    """Answers every call with a :class:`PatientEcho`."""

    def call_received(self) -> None:
        self.answer(session_class=PatientEcho)


class DeclineDialog(Dialog):
    """Declines every call with 603 Decline (RFC 3261 §21.6.2), a status no --app produces."""

    def call_received(self) -> None:
        self.reject(603)
