"""The package's public modules import without a reactor and expose the documented names."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules_loaded_by(code: str) -> set[str]:
    """The names in ``sys.modules`` after *code* runs in a fresh interpreter.

    Same interpreter and package as the tests: ``sys.executable`` with this
    checkout first on ``PYTHONPATH``.
    """
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=path), cwd=ROOT,
        timeout=60,
        check=True,
    )  # fmt: skip
    return set(out.stdout.split())


class ImportTests(unittest.SynchronousTestCase):
    def test_status_names(self) -> None:
        """``voiptwisted.sip`` re-exports SIPStatus and SIPMethod with the reference's phrases."""
        from voiptwisted.sip import SIPMethod, SIPStatus

        self.assertEqual(SIPStatus.BUSY_HERE.phrase, "Busy Here")
        self.assertEqual(SIPStatus.phrase_for(499), "Bad Request")
        self.assertEqual(SIPMethod.INVITE, "INVITE")

    def test_unknown_name(self) -> None:
        """An unknown attribute of ``voiptwisted.sip`` raises AttributeError, not ImportError."""
        import voiptwisted.sip

        with self.assertRaises(AttributeError):
            voiptwisted.sip.NoSuchThing  # noqa: B018

    def test_interfaces(self) -> None:
        from voiptwisted.interfaces import IDialog, ISession

        self.assertIn("answer", IDialog.names())
        self.assertIn("audio_received", ISession.names())


class LightImportTests(unittest.SynchronousTestCase):
    """Issue 9 item 3: the syntax layers load neither numpy nor a reactor."""

    def test_sip_sdp_rtp_packet_load_no_numpy_or_reactor(self) -> None:
        """``import voiptwisted.sip``, ``.sdp`` and ``.rtp.packet``: no numpy, no reactor."""
        loaded = modules_loaded_by(
            "import voiptwisted.sip, voiptwisted.sdp, voiptwisted.rtp.packet"
        )
        self.assertIn("voiptwisted.rtp.packet", loaded)
        self.assertNotIn("numpy", loaded)
        self.assertNotIn("twisted.internet.reactor", loaded)

    def test_sdp_codecs_registry_and_rtp_packet_load_no_twisted(self) -> None:
        """DESIGN.md: ``sdp/`` (offer/answer included) imports no codec, numpy or Twisted;
        the codec registry and ``rtp.packet`` neither; the STUN client stays unloaded."""
        loaded = modules_loaded_by(
            "import voiptwisted.sdp.negotiation, voiptwisted.codecs, voiptwisted.rtp.packet"
        )
        self.assertIn("voiptwisted.sdp.negotiation", loaded)
        unwanted = ("twisted", "numpy", "pylibsrtp", "voiptwisted.media", "voiptwisted.rtp.srtp",
                    "voiptwisted.rtp.stun", "voiptwisted.codecs.g711")
        self.assertEqual(sorted(m for m in loaded if m.startswith(unwanted)), [])

    def test_lazy_rtp_names_resolve(self) -> None:
        """``voiptwisted.rtp`` serves its names on first use (PEP 562)."""
        import voiptwisted.rtp
        from voiptwisted.rtp import packet, stun

        self.assertIs(voiptwisted.rtp.RTPPacket, packet.RTPPacket)
        self.assertIs(voiptwisted.rtp.StunClient, stun.StunClient)
        self.assertIn("RealtimeTransportProtocol", dir(voiptwisted.rtp))
        with self.assertRaises(AttributeError):
            voiptwisted.rtp.NoSuchThing  # noqa: B018


class PublicModuleTests(unittest.SynchronousTestCase):
    """Issue 13: every public module says what it exports, and the package is typed."""

    def public_modules(self) -> list[str]:
        import pkgutil

        import voiptwisted

        found = pkgutil.walk_packages(voiptwisted.__path__, "voiptwisted.")
        names = [module.name for module in found]
        return ["voiptwisted"] + [
            name for name in names if not any(p.startswith("_") for p in name.split("."))
        ]

    def test_all_in_every_public_module(self) -> None:
        """Each module under voiptwisted/ not starting with '_' defines __all__, and every
        name in it exists."""
        import importlib

        modules = self.public_modules()
        self.assertGreater(len(modules), 30)
        for name in modules:
            module = importlib.import_module(name)
            exported = getattr(module, "__all__", None)
            self.assertIsInstance(exported, list | tuple, f"{name} has no __all__")
            missing = [n for n in exported if not hasattr(module, n)]
            self.assertEqual(missing, [], f"{name}.__all__ names what it does not define")

    def test_py_typed_ships(self) -> None:
        """PEP 561: py.typed is in the package and setuptools installs it (build_py copies
        the package the way an install does, into a temporary directory)."""
        import pathlib
        import shutil
        import subprocess
        import sys
        import tempfile

        import voiptwisted

        source = pathlib.Path(voiptwisted.__file__).parent
        self.assertTrue((source / "py.typed").is_file())
        work = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, work, True)
        root = source.parent
        for name in ("setup.cfg", "pyproject.toml", "README.md"):
            shutil.copy(root / name, work / name)
        shutil.copytree(source, work / "voiptwisted",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        shutil.copytree(root / "twisted", work / "twisted",
                        ignore=shutil.ignore_patterns("__pycache__", "*.cache"))  # fmt: skip
        subprocess.run(
            [sys.executable, "-c", "from setuptools import setup; setup()", "-q",
             "build_py", "--build-lib", str(work / "lib")],
            cwd=work, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self.assertTrue((work / "lib" / "voiptwisted" / "py.typed").is_file())
