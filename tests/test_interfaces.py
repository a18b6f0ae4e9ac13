"""Issue 13: every class that declares ``IDialog`` or ``ISession`` provides it, as verified."""

from __future__ import annotations

import inspect
import pathlib
import shutil
import tempfile
import wave

from twisted.trial import unittest
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyClass, verifyObject

from voiptwisted import apps
from voiptwisted.interfaces import IDialog, ISession
from voiptwisted.media.session import EchoSession, PlaybackSession, RecordingSession, Session
from voiptwisted.sip.dialog import Dialog


def silent_wav(path: pathlib.Path) -> pathlib.Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * 160)
    return path


class InterfaceTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.dir, True)

    def dialog_classes(self) -> list[type]:
        wav = self.dir / "a.wav"
        wav.write_bytes(b"")
        return [
            Dialog,
            apps.EchoDialog,
            apps.RejectDialog,
            apps.dialog_for_app(f"play:{wav}"),
            apps.dialog_for_app(f"record:{self.dir / 'rec'}"),
        ]

    def test_dialogs_provide_idialog(self) -> None:
        """verifyObject(IDialog, Dialog()) and every app dialog: ``answer``/``dial`` take
        ``session_class`` keyword-only in the interface as in the class (and the reference)."""
        for cls in self.dialog_classes():
            self.assertTrue(IDialog.implementedBy(cls), cls)
            self.assertTrue(verifyClass(IDialog, cls))
            self.assertTrue(verifyObject(IDialog, cls()))

    def test_sessions_provide_isession(self) -> None:
        dialog = Dialog()
        sessions = [
            Session(dialog=dialog),
            EchoSession(dialog=dialog),
            PlaybackSession(dialog=dialog, path=silent_wav(self.dir / "a.wav")),
            RecordingSession(dialog=dialog, directory=self.dir),
        ]
        for session in sessions:
            self.assertTrue(ISession.providedBy(session), session)
            self.assertTrue(verifyObject(ISession, session))

    def test_keyword_only_session_class(self) -> None:
        """The interface declares what users call (the reference's signatures):
        ``answer(*, session_class, **kw)`` and ``dial(target, *, session_class, **kw)``;
        a dialog taking ``session_class`` only positionally does not verify."""
        for name, positional in (("answer", ()), ("dial", ("target",))):
            self.assertEqual(tuple(IDialog[name].positional), positional)
            parameter = inspect.signature(getattr(Dialog, name)).parameters["session_class"]
            self.assertEqual(parameter.kind, inspect.Parameter.KEYWORD_ONLY)

        class Positional(Dialog):
            def answer(self, session_class: type) -> None:  # type: ignore[override]
                pass

        with self.assertRaises(Invalid):
            verifyObject(IDialog, Positional())
