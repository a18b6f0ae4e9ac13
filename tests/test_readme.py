"""The README's Python examples stay true: they compile, and the call-handler example works."""

from __future__ import annotations

import pathlib
import re
import types

import numpy as np
from twisted.internet import defer
from twisted.trial import unittest

from voiptwisted.interfaces import IDialog, ISession

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


class FakeDialog:
    """Stands in for the Dialog a session belongs to."""

    def __init__(self) -> None:
        self.byes = 0

    def bye(self) -> defer.Deferred[None]:
        self.byes += 1
        return defer.succeed(None)


class ReadmeTests(unittest.SynchronousTestCase):
    def test_blocks_compile(self) -> None:
        blocks = python_blocks()
        self.assertGreaterEqual(len(blocks), 3)
        for number, block in enumerate(blocks):
            compile(block, f"README.md python block {number}", "exec")

    def handler_module(self) -> types.ModuleType:
        block = next(b for b in python_blocks() if "class Menu(Dialog)" in b)
        module = types.ModuleType("myapp")
        exec(compile(block, "README.md myapp", "exec"), module.__dict__)  # noqa: S102
        return module

    def test_call_handler_example(self) -> None:
        """The README's Menu/Beeper implement the interfaces and behave as described."""
        myapp = self.handler_module()
        self.assertTrue(IDialog.implementedBy(myapp.Menu))
        self.assertTrue(ISession.implementedBy(myapp.Beeper))
        dialog = FakeDialog()
        session = myapp.Beeper(dialog=dialog)
        session.start()
        session.dtmf_received("5")
        frame = session.next_frame()
        self.assertEqual(frame.dtype, np.int16)
        self.assertEqual(len(frame), 160)
        self.assertGreater(int(np.abs(frame).max()), 1000)
        session.dtmf_received("#")
        self.assertEqual(dialog.byes, 1)

    def test_menu_answers_with_beeper(self) -> None:
        myapp = self.handler_module()
        answered: list[type] = []
        menu = myapp.Menu.__new__(myapp.Menu)
        menu.remote_party = None
        menu.ringing = lambda: None
        menu.answer = lambda *, session_class, **kw: answered.append(session_class)
        menu.call_received()
        self.assertEqual(answered, [myapp.Beeper])


class TransferExampleTests(unittest.SynchronousTestCase):
    def test_transfer_hook_example(self) -> None:
        """The README's Transfer example declines a foreign target (None: 603) and hands
        the others to ``transfer_call`` (RFC 3515 §2.4.2: the hook decides)."""
        block = next(b for b in python_blocks() if "class Desk(Dialog)" in b)
        module = types.ModuleType("desk")
        exec(compile(block, "README.md desk", "exec"), module.__dict__)  # noqa: S102
        desk = module.Desk()
        dialled: list[tuple[str, object]] = []
        desk.transfer_call = lambda target, replaces=None: dialled.append((target, replaces))
        self.assertIsNone(desk.transfer_received("sip:mallory@elsewhere.example"))
        desk.transfer_received("sip:carol@example.com")
        self.assertEqual(dialled, [("sip:carol@example.com", None)])


class SupportTableTests(unittest.SynchronousTestCase):
    def test_methods_and_option_tags_listed(self) -> None:
        """RFC 3261 §20.5 / §20.37: "What the UA supports" names every method in our Allow
        and every option tag in our Supported, and says SUBSCRIBE, MESSAGE and PUBLISH are not."""
        from voiptwisted.sip.core import ALLOWED_METHODS, SUPPORTED_OPTIONS

        text = README.read_text()
        start = text.index("## What the UA supports")
        section = text[start : text.index("\n## ", start + 1)]
        for method in ALLOWED_METHODS:
            self.assertIn(f"`{method}`", section)
        for tag in SUPPORTED_OPTIONS:
            self.assertIn(f"| `{tag}` |", section)
        not_yet = section[section.index("**Not supported yet**"):]
        for missing in ("SUBSCRIBE", "MESSAGE", "PUBLISH"):
            self.assertIn(missing, not_yet)
            self.assertNotIn(missing, SUPPORTED_OPTIONS | {str(m) for m in ALLOWED_METHODS})

    def test_100rel_policy_documented(self) -> None:
        """RFC 3262 §3: the README names the option that makes our 18x reliable when the
        INVITE only supports 100rel, with its real default (only when required)."""
        from voiptwisted.sip.dialog import Dialog

        text = README.read_text()
        self.assertIn("`Dialog.reliable_when_supported = True` (default `False`", text)
        self.assertIs(Dialog.reliable_when_supported, False)
        self.assertTrue(callable(Dialog.session_progress))
        self.assertIn("`Dialog.session_progress()`", text)
