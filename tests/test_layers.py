"""The package's import graph keeps the layers of docs/architecture.md.

Read from the sources with ``ast`` (nothing is imported): every ``voiptwisted`` module is
assigned to one layer, a module may import only from its own layer or a lower one, and the
graph of module-level and function-level imports has no cycle.  A new module must be given
a layer here, so the picture cannot drift silently.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import voiptwisted

PACKAGE = Path(voiptwisted.__file__).resolve().parent

#: Layers, lowest first.  A module is listed by name; ``pkg.*`` places every module of a
#: package that is not listed by name (codecs/ and media/ grow by design).
LAYERS: dict[str, int] = {
    # syntax: bytes <-> typed objects, codec maths; no clock, no I/O
    "voiptwisted": 0,
    "voiptwisted.interfaces": 0,
    "voiptwisted.sip": 0,
    "voiptwisted.sip.uri": 0,
    "voiptwisted.sip.headers": 0,
    "voiptwisted.sip.status": 0,
    "voiptwisted.sip.message": 0,
    "voiptwisted.sip.framing": 0,
    "voiptwisted.sip.digest": 0,
    "voiptwisted.sdp": 0,
    "voiptwisted.sdp.types": 0,
    "voiptwisted.sdp.description": 0,
    "voiptwisted.rtp": 0,
    "voiptwisted.rtp.packet": 0,
    "voiptwisted.rtp.dtmf": 0,
    "voiptwisted.codecs": 0,
    "voiptwisted.codecs.*": 0,
    "voiptwisted.media.wav": 0,
    "voiptwisted.media.resample": 0,
    # state machines on an injected clock
    "voiptwisted.sip.transaction": 1,
    "voiptwisted.sip.dialog": 1,
    "voiptwisted.sip.reliable": 1,
    "voiptwisted.sip.session_timer": 1,
    "voiptwisted.sip.refer": 1,
    "voiptwisted.sip.registration": 1,
    "voiptwisted.sip.keepalive": 1,
    "voiptwisted.sip.core": 1,
    "voiptwisted.sip.limits": 1,
    "voiptwisted.sdp.negotiation": 1,
    "voiptwisted.sdp.policy": 1,
    "voiptwisted.media": 1,
    "voiptwisted.media.*": 1,
    "voiptwisted.rtp.latch": 1,
    # Twisted adapters: sockets, TLS, DNS
    "voiptwisted.sip.protocol": 2,
    "voiptwisted.sip.datagram": 2,
    "voiptwisted.sip.connect": 2,
    "voiptwisted.sip.locate": 2,
    "voiptwisted.rtp.protocol": 2,
    "voiptwisted.rtp.srtp": 2,
    "voiptwisted.rtp.stun": 2,
    "voiptwisted.media.call": 2,
    # service and plugin
    "voiptwisted.selfsigned": 3,
    "voiptwisted.apps": 3,
    "voiptwisted.metrics": 3,
    "voiptwisted.cdr": 3,
    "voiptwisted.service": 3,
    "voiptwisted.tap": 3,
}
NAMES = ["syntax", "state", "adapter", "service"]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("voiptwisted", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def layer_of(module: str) -> int | None:
    """The layer ``module`` is listed in (by name, else by its package's ``.*``)."""
    if module in LAYERS:
        return LAYERS[module]
    return LAYERS.get(module.rpartition(".")[0] + ".*")


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The ``voiptwisted`` modules ``module`` imports anywhere in its source."""
    found: set[str] = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return {name for name in found if name in known and name != module}


class LayeringTests(SynchronousTestCase):
    """DESIGN.md's layers hold: syntax -> state -> adapters -> service, no cycles."""

    def setUp(self) -> None:
        self.modules = _modules()
        self.graph = {
            name: imports_of(name, path, self.modules) for name, path in self.modules.items()
        }

    def test_every_module_has_a_layer(self) -> None:
        """A new module is placed in a layer here before it can land."""
        self.assertEqual([m for m in sorted(self.modules) if layer_of(m) is None], [])

    def test_no_import_from_a_higher_layer(self) -> None:
        """Lower layers never import higher ones (parent packages excepted: importing
        ``a.b`` runs ``a/__init__``, which is judged on its own imports)."""
        wrong = []
        for name, targets in sorted(self.graph.items()):
            mine = layer_of(name)
            for target in sorted(targets):
                theirs = layer_of(target)
                if mine is not None and theirs is not None and theirs > mine:
                    wrong.append(f"{name} ({NAMES[mine]}) imports {target} ({NAMES[theirs]})")
        self.assertEqual(wrong, [])

    def test_no_cycles(self) -> None:
        """No module reaches itself through the imports of others."""
        cycles = []
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(name: str) -> None:
            state[name] = 1
            stack.append(name)
            for target in sorted(self.graph[name]):
                if state.get(target) == 1:
                    cycles.append(" -> ".join([*stack[stack.index(target):], target]))
                elif target not in state:
                    visit(target)
            stack.pop()
            state[name] = 2

        for name in sorted(self.graph):
            if name not in state:
                visit(name)
        self.assertEqual(cycles, [])

    def test_no_private_names_across_modules(self) -> None:
        """No module imports another module's underscore names."""
        wrong = []
        for name, path in sorted(self.modules.items()):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "voiptwisted"
                ):
                    wrong += [
                        f"{name}: from {node.module} import {alias.name}"
                        for alias in node.names
                        if alias.name.startswith("_") and alias.name != "__version__"
                    ]
        self.assertEqual(wrong, [])

    def test_sdp_imports_only_the_standard_library(self) -> None:
        """``voiptwisted.sdp`` knows no codec, numpy, Twisted or RTP (DESIGN.md)."""
        wrong = []
        for name, path in sorted(self.modules.items()):
            if not name.startswith("voiptwisted.sdp"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                roots = []
                if isinstance(node, ast.Import):
                    roots = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    roots = [(node.module or "").split(".")[0]]
                foreign = {"numpy", "twisted", "zope"}
                wrong += [f"{name} imports {root}" for root in roots if root in foreign]
            wrong += [
                f"{name} imports {target}"
                for target in self.graph[name]
                if not target.startswith("voiptwisted.sdp")
            ]
        self.assertEqual(wrong, [])
