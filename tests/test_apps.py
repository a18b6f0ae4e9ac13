"""The built-in ``--app`` dialogs: echo, reject, play:PATH, record:DIR."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.apps import EchoDialog, RejectDialog, dialog_for_app
from voiptwisted.interfaces import IDialog
from voiptwisted.media.session import EchoSession, PlaybackSession, RecordingSession


def recording(cls: type) -> Any:
    """An instance of *cls* whose SIP actions are recorded instead of sent."""

    class Recording(cls):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.actions: list[tuple[Any, ...]] = []

        def ringing(self) -> None:
            self.actions.append(("ringing",))

        def answer(self, *, session_class: type, **kwargs: Any) -> None:
            self.actions.append(("answer", session_class, kwargs))

        def reject(self, status_code: int = 486) -> None:
            self.actions.append(("reject", status_code))

    return Recording()


class AppTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir, True)

    def test_echo_rings_then_answers_with_echo(self) -> None:
        dialog = recording(dialog_for_app("echo"))
        dialog.call_received()
        self.assertEqual(dialog.actions, [("ringing",), ("answer", EchoSession, {})])

    def test_reject_is_486(self) -> None:
        """The reject app refuses with 486 Busy Here (RFC 3261 §21.4.24)."""
        self.assertIs(dialog_for_app("reject"), RejectDialog)
        dialog = recording(RejectDialog)
        dialog.call_received()
        self.assertEqual(dialog.actions, [("reject", 486)])

    def test_play(self) -> None:
        path = os.path.join(self.dir, "a.wav")
        open(path, "wb").close()
        cls = dialog_for_app(f"play:{path}")
        self.assertTrue(issubclass(cls, EchoDialog))
        dialog = recording(cls)
        dialog.call_received()
        self.assertEqual(dialog.actions[-1], ("answer", PlaybackSession, {"path": path}))

    def test_record_creates_directory(self) -> None:
        target = os.path.join(self.dir, "calls", "today")
        cls = dialog_for_app(f"record:{target}")
        self.assertTrue(os.path.isdir(target))
        self.assertEqual(os.stat(target).st_mode & 0o777, 0o700)  # issue 17: owner only
        dialog = recording(cls)
        dialog.call_received()
        self.assertEqual(dialog.actions[-1], ("answer", RecordingSession, {"directory": target}))

    def test_every_app_is_an_idialog(self) -> None:
        path = os.path.join(self.dir, "a.wav")
        open(path, "wb").close()
        for app in ("echo", "reject", f"play:{path}", f"record:{self.dir}"):
            self.assertTrue(IDialog.implementedBy(dialog_for_app(app)), app)

    def test_bad_apps(self) -> None:
        """Unknown names, a missing WAV and empty arguments raise ValueError naming the problem."""
        for app, fragment in [
            ("karaoke", "unknown app"),
            ("play:", "unknown app"),
            ("record:", "unknown app"),
            ("play:/nonexistent/x.wav", "no such WAV"),
            ("", "unknown app"),
        ]:
            with self.assertRaises(ValueError) as caught:
                dialog_for_app(app)
            self.assertIn(fragment, str(caught.exception))
