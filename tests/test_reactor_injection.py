"""One injected reactor (issue 13): given once where the UA is built, passed down.

No library module reaches for the global reactor except the outermost convenience
functions (checked in the sources with ``ast``, like ``tests/test_layers.py``), and a
UA built on a fake reactor answers calls with their RTP bound on that reactor.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

import voiptwisted
from tests.sip.test_dialog import AVP_OFFER, connect, invite_bytes, written
from voiptwisted.media.call import MediaConfig
from voiptwisted.media.session import EchoSession
from voiptwisted.sip.dialog import Dialog
from voiptwisted.sip.message import Message
from voiptwisted.sip.protocol import SessionInitiationProtocol

PACKAGE = Path(voiptwisted.__file__).resolve().parent

#: Where the global reactor may be imported: (module, enclosing function).  ``run`` is the
#: Twisted form of the reference's one-call entry point; ``makeService`` is twistd's.
ALLOWED = {
    ("voiptwisted.sip.connect", "run"),
    ("voiptwisted.tap", "makeService"),
}


def _imports_reactor(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if module == "twisted.internet.reactor":
            return True
        return module == "twisted.internet" and any(a.name == "reactor" for a in node.names)
    if isinstance(node, ast.Import):
        return any(a.name.startswith("twisted.internet.reactor") for a in node.names)
    return False


def global_reactor_imports() -> set[tuple[str, str]]:
    """Every (module, enclosing function or ``<module>``) importing the global reactor."""
    found: set[tuple[str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        parts = ("voiptwisted", *path.relative_to(PACKAGE).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

        def visit(node: ast.AST, where: str, module: str = module) -> None:
            for child in ast.iter_child_nodes(node):
                if _imports_reactor(child):
                    found.add((module, where))
                inner = (
                    child.name
                    if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                    else where
                )
                visit(child, inner)

        visit(ast.parse(path.read_text(), str(path)), "<module>")
    return found


class GlobalReactorTests(SynchronousTestCase):
    def test_only_the_convenience_functions_import_the_global_reactor(self) -> None:
        """Issue 13: nine places fell back to the global reactor, so a UA built on a test
        or host reactor still timed or bound something on the global one."""
        self.assertEqual(global_reactor_imports() - ALLOWED, set())

    def test_the_check_sees_every_form_of_import(self) -> None:
        for source in (
            "from twisted.internet import reactor",
            "from twisted.internet import reactor as r",
            "import twisted.internet.reactor",
            "from twisted.internet.reactor import callLater",
        ):
            self.assertTrue(_imports_reactor(ast.parse(source).body[0]), source)
        self.assertFalse(_imports_reactor(ast.parse("from twisted.internet import task").body[0]))


class FakeUDPPort:
    """A bound datagram port of :class:`UDPReactor`: records what is written."""

    def __init__(self, port: int, interface: str) -> None:
        self.address = IPv4Address("UDP", interface or "0.0.0.0", port)
        self.sent: list[tuple[bytes, Any]] = []
        self.listening = True

    def write(self, data: bytes, addr: Any = None) -> None:
        self.sent.append((data, addr))

    def getHost(self) -> IPv4Address:
        return self.address

    def stopListening(self) -> None:
        self.listening = False


@implementer(IReactorUDP)
class UDPReactor(MemoryReactorClock):
    """``MemoryReactorClock`` (IReactorTime, TCP, SSL) with in-memory UDP ports."""

    def __init__(self) -> None:
        super().__init__()
        self.udp: list[FakeUDPPort] = []

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> FakeUDPPort:
        bound = FakeUDPPort(port, interface)
        self.udp.append(bound)
        protocol.makeConnection(bound)
        return bound


class Answering(Dialog):
    def call_received(self) -> None:
        self.answer(session_class=EchoSession)


class FakeReactorTests(SynchronousTestCase):
    def answer_on(self, reactor: UDPReactor, **kwargs: object) -> Message:
        proto = SessionInitiationProtocol(
            aor="sip:bob@example.com", reactor=reactor, dialog_class=Answering, **kwargs
        )
        transport = connect(proto)
        proto.dataReceived(invite_bytes(body=AVP_OFFER))
        final = written(transport)[-1]
        [dialog] = proto.dialogs
        self.addCleanup(dialog.bye)
        return final

    def test_a_fake_reactor_answers_calls(self) -> None:
        """Issue 13: ``SessionInitiationProtocol(clock=task.Clock())`` answered every call
        with 500 ('Clock' object has no attribute 'listenUDP'); one ``reactor`` providing
        IReactorTime and IReactorUDP now answers, its RTP ports bound on that reactor."""
        reactor = UDPReactor()
        final = self.answer_on(reactor)
        self.assertEqual(final.status_code, 200)
        self.assertIn(b"m=audio", final.body)
        self.assertEqual(len(reactor.udp), 2)  # RTP and RTCP

    def test_media_config_without_reactor_binds_on_the_uas(self) -> None:
        """A MediaConfig given without a reactor used the global one for its calls' RTP."""
        reactor = UDPReactor()
        config = MediaConfig(port_range=(41000, 41100))
        final = self.answer_on(reactor, media_config=config)
        self.assertEqual(final.status_code, 200)
        self.assertIs(config.reactor, reactor)
        self.assertEqual(len(reactor.udp), 2)

    def test_media_config_alone_needs_a_reactor(self) -> None:
        self.assertRaises(RuntimeError, MediaConfig().get_reactor)
