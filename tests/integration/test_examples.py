"""The embedding examples run for real: ``examples/click_to_call.py`` against Kamailio and
baresip, ``examples/web_calls.tac`` under ``twistd -ny`` against SIPp (straight to it, and
through Kamailio) (the ``voip.tac`` example is run by ``test_twistd``).  Loopback only,
ports chosen at run time; every process is stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration import peers
from tests.integration.peers import Baresip, Kamailio, Sipp, require, wait_until
from tests.integration.test_twistd import Twistd

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "Al1ce-pw-7731"


class ClickToCallTests(SynchronousTestCase):
    def setUp(self) -> None:
        require("kamailio", "baresip")
        self.dir = Path(tempfile.mkdtemp(prefix="click-to-call-"))
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.kam = Kamailio(self.dir / "kam", users={"alice": PASSWORD, "bob": "secret"})
        self.addCleanup(self.kam.cleanup)
        self.kam.start()

    def start_example(self) -> tuple[subprocess.Popen, int, Path]:
        host, port = self.kam.address("tls")
        web_port = peers.free_port()
        log_path = self.dir / "click.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed in the cleanup
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            VOIP_AOR=f"sip:alice@{host}:{port}",
            SIP_PASSWORD=PASSWORD,
            VOIP_CA_FILE=str(self.kam.ca_cert),
            VOIP_STATE_DIR=str(self.dir / "state"),
        )
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "examples" / "click_to_call.py"), str(web_port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(self.dir),
            start_new_session=True,
        )  # fmt: skip

        def stop() -> None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(6)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            log.close()

        self.addCleanup(stop)
        self.kam.wait_for_bindings("alice", 1, timeout=20)
        wait_until(lambda: peers.tcp_open(web_port), 10, 0.1, "click-to-call page")
        return proc, web_port, log_path

    def post(self, port: int, target: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{port}/call?" + urllib.parse.urlencode({"to": target})
        request = urllib.request.Request(url, data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http://127.0.0.1
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def test_click_to_call(self) -> None:
        """POST /call?to=bob places a call through the registered VoIPService; baresip answers;
        a bad target is 400, an unanswerable one 502 with the SIP status; stopping BYEs."""
        ua = Baresip(self.dir / "bob", account=self.kam.baresip_account("bob", answermode="auto"))
        self.addCleanup(ua.cleanup)
        ua.start()
        ua.wait_registered()
        proc, port, log_path = self.start_example()
        status, text = self.post(port, self.kam.uri("bob"))
        self.assertEqual(status, 200, text)
        self.assertTrue(text.startswith("answered: "), text)
        ua.wait_for_event("CALL_ESTABLISHED", 10)
        status, text = self.post(port, "not a uri")
        self.assertEqual(status, 400, text)
        status, text = self.post(port, self.kam.uri("carol"))
        self.assertEqual((status, text.strip()), (502, "not answered: 404 Not Found"))
        proc.send_signal(signal.SIGTERM)
        ua.wait_for_event("CALL_CLOSED", 10)
        self.assertIn(proc.wait(6), (0, -signal.SIGTERM))
        self.assertNotIn(PASSWORD, log_path.read_text())


class WebCallsTacTests(SynchronousTestCase):
    """``twistd -ny examples/web_calls.tac``: a twisted.web site placing calls (issue 13)."""

    def setUp(self) -> None:
        require("sipp")
        self.dir = Path(tempfile.mkdtemp(prefix="web-calls-"))
        self.addCleanup(shutil.rmtree, self.dir, True)

    def start_tac(self, **env: str) -> tuple[Twistd, int]:
        web_port = peers.free_port()
        env.update(
            VOIP_WEB=f"tcp:{web_port}:interface=127.0.0.1",
            VOIP_STATE_DIR=str(self.dir / "state"),
        )
        process = Twistd(self.dir, ["-y", str(REPO / "examples" / "web_calls.tac")], env=env)
        self.addCleanup(process.stop)

        def up() -> bool:
            if process.proc.poll() is not None:
                raise AssertionError(f"twistd exited:\n{process.log}")
            return peers.tcp_open(web_port)

        wait_until(up, 20, 0.1, "the web_calls.tac site")
        return process, web_port

    def sipp(self, scenario: str, remote: tuple[str, int] | None = None, **kwargs: object) -> Sipp:
        tmpdir = self.dir / f"sipp-{len(list(self.dir.glob('sipp-*')))}-{scenario}"
        sipp = Sipp(scenario, remote, tmpdir=tmpdir, timeout=30, **kwargs)
        self.addCleanup(sipp.cleanup)
        return sipp.start()

    def request(self, port: int, method: str, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{port}{path}"
        request = urllib.request.Request(url, data=b"" if method == "POST" else None,
                                         method=method)  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http://127.0.0.1
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def call(self, port: int, target: str, seconds: float = 0) -> tuple[int, str]:
        query = urllib.parse.urlencode({"to": target, "seconds": seconds})
        return self.request(port, "POST", f"/call?{query}")

    def call_and_go_away(self, port: int, target: str, ringing: Sipp) -> None:
        """POST a call, wait until the callee rings, then close the HTTP connection."""
        query = urllib.parse.urlencode({"to": target})
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(
                f"POST /call?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            wait_until(lambda: "SIP/2.0 180 Ringing" in ringing.messages, 20, 0.1,
                       "the callee ringing")  # fmt: skip

    def assertSippOk(self, sipp: Sipp) -> None:
        result = sipp.wait(40)
        self.assertTrue(result.ok, f"{result.errors}\n{result.log[-2000:]}")

    def assertCleanExit(self, process: Twistd) -> None:
        clean, _ = process.terminate()
        self.assertTrue(clean, process.log)
        self.assertNotIn("Traceback", process.log)

    def test_without_registrar_calls_go_straight_to_the_target(self) -> None:
        """No VOIP_AOR: POST /call reaches SIPp over TCP directly (answered, BYE after
        ``seconds``); a client that disconnects while it rings cancels the call (SIPp
        gets CANCEL, answers 487 and gets the ACK)."""
        sip_port = peers.free_port()
        process, web = self.start_tac(
            VOIP_LISTEN=f"tcp:{sip_port}:interface=127.0.0.1",
            VOIP_SRTP="off",  # SIPp answers RTP/AVP only
        )
        self.assertEqual(self.request(web, "GET", "/"), (200, "voip: running=True calls=0\n"))
        uas = self.sipp("uas", transport="t1")
        target = f"sip:sipp@127.0.0.1:{uas.local_port};transport=tcp"
        status, text = self.call(web, target, seconds=0.5)
        self.assertEqual(status, 200, text + process.log)
        self.assertTrue(text.startswith("answered: "), text)
        self.assertSippOk(uas)
        ringing = self.sipp("uas_ring_cancel", transport="t1")
        target = f"sip:sipp@127.0.0.1:{ringing.local_port};transport=tcp"
        self.call_and_go_away(web, target, ringing)
        self.assertSippOk(ringing)
        self.assertCleanExit(process)

    def test_with_registrar(self) -> None:
        """VOIP_AOR at Kamailio (TLS, private CA): the call to bob (a SIPp UAS registered
        there) goes through the registered flow; a call to carol (ringing only) is
        cancelled through Kamailio when the HTTP client goes away; SIGTERM un-registers."""
        require("kamailio")
        kam = Kamailio(self.dir / "kam", users={"alice": PASSWORD, "bob": "b0b-pw",
                                                 "carol": "car0l-pw"})  # fmt: skip
        self.addCleanup(kam.cleanup)
        kam.start()
        for user, scenario in (("bob", "uas"), ("carol", "uas_ring_cancel")):
            uas = self.sipp(scenario, service=user)
            register = self.sipp(
                "register", kam.address("udp"), service=user, auth=(user, kam.users[user]),
                keys={"contact_host": "127.0.0.1", "contact_port": uas.local_port,
                      "expires": 60},
            )  # fmt: skip
            self.assertSippOk(register)
            setattr(self, user, uas)
        host, port = kam.address("tls")
        process, web = self.start_tac(
            VOIP_AOR=f"sip:alice@{host}:{port}", SIP_PASSWORD=PASSWORD,
            VOIP_CA_FILE=str(kam.ca_cert), VOIP_SRTP="off",  # SIPp answers RTP/AVP only
        )  # fmt: skip
        kam.wait_for_bindings("alice", 1, timeout=20)
        status, text = self.call(web, kam.uri("bob"), seconds=0.5)
        self.assertEqual(status, 200, text + process.log)
        self.assertSippOk(self.bob)
        self.call_and_go_away(web, kam.uri("carol"), self.carol)
        self.assertSippOk(self.carol)
        self.assertCleanExit(process)
        self.assertEqual(kam.bindings("alice"), [])
        self.assertNotIn(PASSWORD, process.log)

    def test_bind_failure_leaves_the_site_running(self) -> None:
        """A SIP listener that cannot bind fails the VoIP service only: one error line,
        the site keeps serving and reports it, calls fail with it, SIGTERM is clean."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            sip_port = taken.getsockname()[1]
            listen = f"tcp:{sip_port}:interface=127.0.0.1"
            process, web = self.start_tac(VOIP_LISTEN=listen)
            reason = f"cannot listen on {listen}: Address already in use"
            process.wait_for_log(reason)
            self.assertEqual(self.request(web, "GET", "/"), (503, f"voip: {reason}\n"))
            status, text = self.call(web, "sip:bob@127.0.0.1:5999;transport=tcp")
            self.assertEqual((status, text), (502, f"not answered: {reason}\n"))
            self.assertIsNone(process.proc.poll())
            self.assertCleanExit(process)
