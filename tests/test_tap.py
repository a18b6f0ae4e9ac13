"""``twistd voip`` options: every option parsed, every bad value a usage error naming it."""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Any

from twisted.internet import task
from twisted.python import usage
from twisted.trial import unittest

from voiptwisted.tap import Options


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.state = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.state, ignore_errors=True))
        self.env = os.environ.pop("SIP_PASSWORD", None)
        self.addCleanup(self._restore_env)

    def _restore_env(self) -> None:
        os.environ.pop("SIP_PASSWORD", None)
        if self.env is not None:
            os.environ["SIP_PASSWORD"] = self.env

    def assertUsage(self, fragment: str, *argv: str) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            parse("--state-dir", self.state, *argv)
        self.assertIn(fragment, str(caught.exception))

    def test_embedded_default(self) -> None:
        """No --aor and no --listen: echo, optional SRTP, nothing to register."""
        config = parse("--state-dir", self.state).config
        self.assertIsNone(config.aor)
        self.assertIsNone(config.listen)
        self.assertEqual(config.dialog_class.__name__, "EchoDialog")
        self.assertEqual(config.srtp, "optional")
        self.assertEqual(config.rtp_ports, (10000, 20000))
        self.assertEqual(config.keepalive, 30.0)
        self.assertTrue(config.verify_tls)

    def test_dial_without_aor_goes_direct(self) -> None:
        """Issue 13: --dial without --aor is a direct call (no registrar), not a usage
        error; TLS verification stays on unless --no-verify-tls, --ca-file is kept, and
        the process listens nowhere (not even the embedded default's 127.0.0.1:5061)."""
        from twisted.internet.testing import MemoryReactorClock

        from voiptwisted.service import VoIPService

        ca = os.path.join(self.state, "ca.pem")
        pathlib.Path(ca).write_text("")
        options = parse("--state-dir", self.state, "--dial", "sips:bob@127.0.0.1:5071",
                        "--ca-file", ca, "--app", "reject")  # fmt: skip
        config = options.config
        self.assertIsNone(config.aor)
        self.assertEqual(str(config.dial), "sips:bob@127.0.0.1:5071")
        self.assertEqual((config.ca_file, config.verify_tls), (ca, True))
        self.assertEqual(config.srtp, "required")  # RFC 3261 §26.2.2: a sips: target
        self.assertEqual(config.dialog_class.__name__, "RejectDialog")
        service = VoIPService(config, MemoryReactorClock())
        self.assertEqual((service.listeners, service.client), ([], None))
        tcp = parse("--state-dir", self.state, "--no-verify-tls",
                    "--dial", "sip:bob@127.0.0.1:5071;transport=tcp").config  # fmt: skip
        self.assertFalse(tcp.verify_tls)
        self.assertEqual(tcp.dial.transport, "TCP")
        self.assertEqual(tcp.srtp, "optional")

    def test_codecs_option(self) -> None:
        """Issue 12: --codecs picks the codecs and their order (default Opus, G.722, PCMA,
        PCMU); the service's MediaConfig gets them; unknown or repeated names are refused."""
        default = parse("--state-dir", self.state).config.codecs
        self.assertEqual([name.lower() for name in default], ["opus", "g722", "pcma", "pcmu"])
        config = parse("--state-dir", self.state, "--codecs", "g722, pcmu").config
        self.assertEqual(config.codecs, ("g722", "pcmu"))
        from voiptwisted.service import VoIPService

        service = VoIPService(config, task.Clock())
        self.assertEqual(service.media_config.codecs, ("g722", "pcmu"))
        self.assertUsage("unknown codec 'speex'", "--codecs", "opus,speex")
        self.assertUsage("twice", "--codecs", "pcma,PCMA")
        self.assertUsage("at least one codec", "--codecs", ",")

    def test_sips_aor_requires_srtp(self) -> None:
        """Issue 5: SRTP is required by default for sips: AORs, optional otherwise; issue 14
        finding 11: --srtp off/optional with a sips: AOR or --dial target is refused."""
        self.assertEqual(parse("--aor", "sips:alice@example.com").config.srtp, "required")
        self.assertEqual(parse("--aor", "sip:alice@example.com").config.srtp, "optional")
        self.assertEqual(
            parse("--aor", "sip:alice@example.com", "--srtp", "off").config.srtp, "off"
        )
        for policy in ("off", "optional"):
            self.assertUsage("sips: requires SRTP", "--aor", "sips:alice@example.com",
                             "--srtp", policy)
            self.assertUsage("sips: requires SRTP", "--aor", "sip:alice@example.com",
                             "--dial", "sips:bob@example.com", "--srtp", policy)
        config = parse("--aor", "sip:alice@example.com", "--dial", "sips:bob@example.com").config
        self.assertEqual(config.srtp, "required")

    def test_rtp_timeouts(self) -> None:
        """Issue 17 item 2: --rtp-timeout (default 60 s) and --rtp-hold-timeout (default
        off) reach the service's MediaConfig."""
        config = parse("--state-dir", self.state).config
        self.assertEqual((config.rtp_timeout, config.rtp_hold_timeout), (60.0, 0.0))
        config = parse("--state-dir", self.state, "--rtp-timeout", "0",
                       "--rtp-hold-timeout", "900").config
        self.assertEqual((config.rtp_timeout, config.rtp_hold_timeout), (0.0, 900.0))
        for bad in ("-1", "x", "nan", "1e9"):
            self.assertUsage("--rtp-timeout", "--rtp-timeout", bad)
            self.assertUsage("--rtp-hold-timeout", "--rtp-hold-timeout", bad)

    def test_session_expires(self) -> None:
        """Issue 11 item 2: --session-expires (default 1800 s, RFC 4028 §4) reaches the
        service's MediaConfig, which the dialogs read; below the RFC 4028 §5 floor of
        90 s (or above a day, or not a whole number) it is refused."""
        from voiptwisted.service import VoIPService

        self.assertEqual(parse("--state-dir", self.state).config.session_expires, 1800)
        config = parse("--state-dir", self.state, "--session-expires", "90").config
        self.assertEqual(VoIPService(config, task.Clock()).media_config.session_expires, 90)
        for bad in ("89", "0", "x", "90.5", "86401"):
            self.assertUsage("--session-expires", "--session-expires", bad)

    def test_100rel_policy(self) -> None:
        """Issue 11: --100rel required|supported (RFC 3262 §3) reaches ServiceConfig and
        the class of the dialogs the service receives; anything else is refused; left
        out, the dialog class keeps its own ``reliable_when_supported``."""
        from voiptwisted.service import VoIPService

        self.assertIsNone(parse("--state-dir", self.state).config.reliable_provisionals)
        config = parse("--state-dir", self.state, "--100rel", "supported").config
        self.assertEqual(config.reliable_provisionals, "supported")
        service = VoIPService(config, task.Clock())
        self.assertTrue(service.inbound_dialog_class.reliable_when_supported)
        config = parse("--state-dir", self.state, "--100rel", "required").config
        service = VoIPService(config, task.Clock())
        self.assertFalse(service.inbound_dialog_class.reliable_when_supported)
        for bad in ("always", "", "Supported"):
            self.assertUsage("--100rel", "--100rel", bad)

    def test_password_sources(self) -> None:
        """The password comes from the AOR, --password-file or $SIP_PASSWORD, in that order."""
        self.assertEqual(parse("--aor", "sip:alice:pw1@example.com").config.password, "pw1")
        os.environ["SIP_PASSWORD"] = "pw3"
        self.assertEqual(parse("--aor", "sip:alice@example.com").config.password, "pw3")
        path = pathlib.Path(self.state) / "pw"
        path.write_text("pw2\n")
        config = parse("--aor", "sip:alice@example.com", "--password-file", str(path)).config
        self.assertEqual(config.password, "pw2")
        self.assertNotIn("pw2", repr(config))

    def test_all_options(self) -> None:
        options = parse(
            "--aor", "sips:alice@example.com",
            "--keepalive", "45",
            "--stun-server", "127.0.0.1",
            "--rtp-ports", "20000-20100",
            "--max-calls", "3",
            "--app", "reject",
            "--listen", "tcp:5060",
            "--trace-sip",
            "--no-redirects",
            "--no-verify-tls",
            "--dial", "sip:bob@example.com",
        )  # fmt: skip
        config = options.config
        self.assertEqual(config.keepalive, 45.0)
        self.assertEqual(config.stun_server, ("127.0.0.1", 3478))
        self.assertEqual(config.rtp_ports, (20000, 20100))
        self.assertEqual(config.max_calls, 3)
        self.assertEqual(config.dialog_class.__name__, "RejectDialog")
        self.assertEqual(config.listen, ("tcp:5060",))
        self.assertTrue(config.trace_sip)
        self.assertFalse(config.follow_redirects)
        self.assertFalse(config.verify_tls)
        self.assertEqual(config.dial.user, "bob")
        self.assertIsNone(config.dns_server)

    def test_bound_options(self) -> None:
        """Issue 14 findings 5 and 6: connection and call bounds, with their defaults."""
        config = parse().config
        self.assertEqual(
            (config.max_connections, config.handshake_timeout, config.request_timeout,
             config.idle_timeout, config.message_timeout, config.max_call_duration),
            (1000, 10.0, 30.0, 120.0, 10.0, 0.0),
        )  # fmt: skip
        config = parse(
            "--max-connections", "50", "--handshake-timeout", "2", "--request-timeout", "3",
            "--idle-timeout", "4", "--message-timeout", "5", "--max-call-duration", "3600",
        ).config  # fmt: skip
        self.assertEqual(
            (config.max_connections, config.handshake_timeout, config.request_timeout,
             config.idle_timeout, config.message_timeout, config.max_call_duration),
            (50, 2.0, 3.0, 4.0, 5.0, 3600.0),
        )  # fmt: skip
        self.assertUsage("--max-connections", "--max-connections", "0")
        self.assertUsage("--max-connections", "--max-connections", "lots")
        self.assertUsage("--idle-timeout", "--idle-timeout", "-1")
        self.assertUsage("--max-call-duration", "--max-call-duration", "long")

    def test_dns_server(self) -> None:
        """--dns-server IP[:PORT]: where the registrar's SRV records are looked up (RFC 3263);
        port 53 by default; a name is refused (finding it would need DNS itself)."""
        aor = ("--aor", "sips:alice@example.com")
        self.assertEqual(
            parse(*aor, "--dns-server", "127.0.0.1:5353").config.dns_server, ("127.0.0.1", 5353)
        )
        self.assertEqual(parse(*aor, "--dns-server", "[::1]").config.dns_server, ("::1", 53))
        self.assertUsage("IP address", *aor, "--dns-server", "ns.example.com")
        self.assertUsage("--dns-server", *aor, "--dns-server", "127.0.0.1:99999")

    def test_play_and_record_apps(self) -> None:
        wav = pathlib.Path(self.state) / "a.wav"
        wav.write_bytes(b"")
        play = parse("--app", f"play:{wav}").config.dialog_class
        self.assertEqual(play.session_kwargs, {"path": str(wav)})
        record_dir = pathlib.Path(self.state) / "rec"
        record = parse("--app", f"record:{record_dir}").config.dialog_class
        self.assertEqual(record.session_kwargs, {"directory": str(record_dir)})
        self.assertTrue(record_dir.is_dir())

    def test_dialog_option(self) -> None:
        """--dialog takes any IDialog class and overrides --app."""
        config = parse("--dialog", "voiptwisted.apps.RejectDialog", "--app", "echo").config
        self.assertEqual(config.dialog_class.__name__, "RejectDialog")

    def test_auth_realm_and_legacy_digest(self) -> None:
        """--auth-realm is repeatable; qop-less MD5 is refused unless --allow-legacy-digest."""
        config = parse("--state-dir", self.state, "--aor", "sips:alice@example.com").config
        self.assertEqual((config.auth_realms, config.allow_legacy_digest), ((), False))
        config = parse(
            "--state-dir", self.state, "--aor", "sips:alice@example.com",
            "--auth-realm", "proxy.example", "--auth-realm", "carrier",
            "--allow-legacy-digest",
        ).config  # fmt: skip
        self.assertEqual(config.auth_realms, ("proxy.example", "carrier"))
        self.assertTrue(config.allow_legacy_digest)
        self.assertUsage("--auth-realm", "--auth-realm", " ")

    def test_usage_errors(self) -> None:
        """Each bad value is a usage error naming the option and what to do."""
        self.assertUsage("--aor", "--aor", "mailto:alice@example.com")
        self.assertUsage("user part", "--aor", "sip:example.com")
        self.assertUsage("--rtp-ports", "--rtp-ports", "20000")
        self.assertUsage("--rtp-ports", "--rtp-ports", "30000-20000")
        self.assertUsage("--keepalive", "--keepalive", "soon")
        self.assertUsage("--keepalive", "--keepalive", "1")
        self.assertUsage("--srtp", "--srtp", "maybe")
        self.assertUsage("--max-calls", "--max-calls", "many")
        self.assertUsage("--ca-file", "--ca-file", "/nonexistent/ca.pem")
        self.assertUsage("--password-file", "--password-file", "/nonexistent/pw")
        self.assertUsage("--dial", "--dial", "mailto:bob@example.com")
        self.assertUsage("unknown app", "--app", "karaoke")
        self.assertUsage("no such WAV", "--app", "play:/nonexistent.wav")
        self.assertUsage("--dialog", "--dialog", "no.such.Module")
        self.assertUsage("implementing IDialog", "--dialog", "voiptwisted.service.ServiceConfig")

    def test_password_not_in_usage_error(self) -> None:
        """A bad AOR's error text never shows its password."""
        with self.assertRaises(usage.UsageError) as caught:
            parse("--aor", "sip:alice:hunter2@[::1")
        self.assertNotIn("hunter2", str(caught.exception))


class ListenOptionTests(unittest.SynchronousTestCase):
    """Issue 13: --listen is repeatable and each value is checked before anything starts."""

    def setUp(self) -> None:
        self.state = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(lambda: __import__("shutil").rmtree(self.state, ignore_errors=True))

    def assertUsage(self, fragment: str, *argv: str) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            parse("--state-dir", str(self.state), *argv)
        self.assertIn(fragment, str(caught.exception))

    def test_repeatable(self) -> None:
        config = parse(
            "--listen", "tcp:5060:interface=127.0.0.1", "--listen", "tls:5061:interface=127.0.0.1"
        ).config
        self.assertEqual(
            config.listen, ("tcp:5060:interface=127.0.0.1", "tls:5061:interface=127.0.0.1")
        )

    def test_each_value_checked(self) -> None:
        """Unknown endpoint type, bad port, unknown argument, missing key file: usage errors
        naming --listen and the value (issue 13: not a runtime log after start)."""
        self.assertUsage("--listen 'bogus:1'", "--listen", "bogus:1")
        self.assertUsage("--listen 'tcp:fivethousand'", "--listen", "tcp:fivethousand")
        self.assertUsage("--listen 'tls:soon'", "--listen", "tls:soon")
        self.assertUsage("--listen 'tcp:5060:colour=blue'", "--listen", "tcp:5060:colour=blue")
        missing_key = "ssl:5061:privateKey=/nonexistent/key.pem"
        self.assertUsage("/nonexistent/key.pem", "--listen", missing_key)
        self.assertUsage("--listen 'bogus:1'", "--listen", "tcp:5060", "--listen", "bogus:1")

    def test_udp_values_checked(self) -> None:
        """--listen udp:PORT[:interface=IP] (SIP over UDP) is accepted; a bad port, an
        unknown argument or a non-IP interface is a usage error."""
        config = parse(
            "--state-dir", str(self.state),
            "--listen", "udp:5060", "--listen", "udp:5062:interface=127.0.0.1",
        ).config
        self.assertEqual(config.listen, ("udp:5060", "udp:5062:interface=127.0.0.1"))
        self.assertUsage("--listen 'udp:fivethousand'", "--listen", "udp:fivethousand")
        self.assertUsage("--listen 'udp:5060:colour=blue'", "--listen", "udp:5060:colour=blue")
        self.assertUsage("interface must be an IP", "--listen", "udp:5060:interface=lo")

    def test_listed_in_help(self) -> None:
        self.assertRegex(str(Options()), r"(?s)--listen=\s+Endpoint for direct calls.*?repeatable")

    def test_check_writes_nothing(self) -> None:
        """A TLS listen without a key is checked without creating the embedded certificate."""
        state = self.state / "state"
        parse("--state-dir", str(state), "--listen", "tls:5071:interface=127.0.0.1")
        self.assertFalse(state.exists())


class VersionTests(unittest.SynchronousTestCase):
    def test_version_is_voiptwisted(self) -> None:
        """``twistd voip --version`` prints voiptwisted's version, not only Twisted's."""
        import contextlib
        import io

        import voiptwisted

        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as exited:
            parse("--version")
        self.assertEqual(exited.exception.code, 0)
        self.assertTrue(out.getvalue().startswith(f"voiptwisted {voiptwisted.__version__} "))


def run_hooks(reactor: Any) -> None:
    """What ``reactor.run()`` does first (MemoryReactor's run() also stops at once)."""
    reactor.running = True
    for f, args, kwargs in reactor.whenRunningHooks:
        f(*args, **kwargs)


class ExitHookTests(unittest.SynchronousTestCase):
    """Issue 13: only the plugin stops the reactor and decides the exit status."""

    def service(self, reactor: object, **kwargs: object) -> object:
        from voiptwisted.service import ServiceConfig, VoIPService

        state = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(lambda: __import__("shutil").rmtree(state, ignore_errors=True))
        return VoIPService(ServiceConfig(state_dir=state, **kwargs), reactor=reactor)

    def test_start_failure_stops_reactor_once_running_exit_1(self) -> None:
        from twisted.internet.error import CannotListenError
        from twisted.internet.testing import MemoryReactorClock

        from voiptwisted.tap import _exit_with, exit_when_finished

        class Busy(MemoryReactorClock):
            def listenTCP(self, port: int, *args: object, **kwargs: object) -> object:
                raise CannotListenError("127.0.0.1", port, OSError(98, "Address already in use"))

        reactor = Busy()
        service = self.service(reactor, listen="tcp:5060:interface=127.0.0.1")
        registered: list[tuple[object, int]] = []
        exit_when_finished(service, reactor, at_exit=lambda f, s: registered.append((f, s)))
        service.privilegedStartService()  # twistd: before the reactor runs
        service.startService()
        self.assertEqual(registered, [(_exit_with, 1)])
        self.assertFalse(reactor.hasStopped)
        run_hooks(reactor)  # the reactor starts running
        self.assertTrue(reactor.hasStopped)

    def test_answering_service_is_left_running(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        from voiptwisted.tap import exit_when_finished

        reactor = MemoryReactorClock()
        service = self.service(reactor, listen="tcp:5060:interface=127.0.0.1")
        registered: list[object] = []
        exit_when_finished(service, reactor, at_exit=lambda f, s: registered.append(s))
        service.startService()
        run_hooks(reactor)
        self.assertFalse(reactor.hasStopped)
        self.assertEqual(registered, [])
