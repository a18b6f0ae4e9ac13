"""The embedding examples run for real: ``examples/click_to_call.py`` against Kamailio and
baresip (the ``.tac`` example is run by ``test_twistd``).  Loopback only; every process is
stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration import peers
from tests.integration.peers import Baresip, Kamailio, require, wait_until

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
