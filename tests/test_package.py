"""The package's public modules import without a reactor and expose the documented names."""

from twisted.trial import unittest


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
