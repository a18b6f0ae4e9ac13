"""Proof that the integration harness drives real peers: Kamailio, SIPp, baresip, socat.

No voiptwisted code is involved: these tests pin that the registrar, the relays and the
recorders behave as the other integration tests assume.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
from pathlib import Path

import numpy as np
from twisted.trial.unittest import FailTest, SynchronousTestCase

from tests.integration import peers
from tests.integration.certs import get_pki
from tests.integration.peers import (
    Baresip,
    Kamailio,
    PeerError,
    Sipp,
    TlsRelay,
    digest_register,
    free_port,
    g711a_pcap_samples,
    make_speech_wav,
    read_wav,
    xcorr_peak,
)


class _PeerTestCase(SynchronousTestCase):
    def tmpdir(self) -> str:
        path = tempfile.mkdtemp(prefix="peers-test-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def kamailio(self, **kwargs) -> Kamailio:
        peers.require("kamailio", "kamcmd")
        kam = Kamailio(self.tmpdir(), **kwargs)
        self.addCleanup(kam.cleanup)
        return kam.start()

    def baresip(self, **kwargs) -> Baresip:
        peers.require("baresip", "sox")
        ua = Baresip(self.tmpdir(), **kwargs)
        self.addCleanup(ua.cleanup)
        return ua.start()

    def sipp(self, *args, **kwargs) -> Sipp:
        peers.require("sipp", "socat")
        kwargs.setdefault("tmpdir", self.tmpdir())
        agent = Sipp(*args, **kwargs)
        self.addCleanup(agent.cleanup)
        return agent

    def assertSippOk(self, result) -> None:
        self.assertTrue(
            result.ok,
            f"SIPp rc={result.returncode} ok={result.successful} failed={result.failed}\n"
            f"{result.errors[-2000:]}",
        )


class CertsTests(SynchronousTestCase):
    def test_chain_and_identities(self) -> None:
        """The server cert verifies for localhost; the other two fail the way they should."""
        from cryptography import x509

        pki = get_pki()
        self.assertIs(pki, get_pki())
        server = x509.load_pem_x509_certificate(Path(pki.server.cert).read_bytes())
        sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(sans.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual(
            sorted(str(ip) for ip in sans.get_values_for_type(x509.IPAddress)),
            ["127.0.0.1", "::1"],
        )
        ca = x509.load_pem_x509_certificate(Path(pki.ca.cert).read_bytes())
        server.verify_directly_issued_by(ca)
        wrong = x509.load_pem_x509_certificate(Path(pki.wrong_host.cert).read_bytes())
        wrong.verify_directly_issued_by(ca)
        unknown = x509.load_pem_x509_certificate(Path(pki.unknown_ca.cert).read_bytes())
        with self.assertRaises(ValueError):
            unknown.verify_directly_issued_by(ca)
        self.assertEqual(os.stat(pki.server.key).st_mode & 0o077, 0)


class KamailioTests(_PeerTestCase):
    def test_tls_register_md5_baresip(self) -> None:
        """baresip registers over TLS with MD5 digest (RFC 3261 §22.2) and shows in ul.dump."""
        kam = self.kamailio(algorithm="MD5")
        ua = self.baresip(account=kam.baresip_account("alice", regint="600"))
        ua.wait_registered()
        (binding,) = kam.wait_for_bindings("alice")
        self.assertIn("transport=tls", binding.contact)
        self.assertTrue(binding.received.startswith("sip:127.0.0.1:"))
        self.assertTrue(binding.socket.startswith(f"tls:127.0.0.1:{kam.tls_port}"))
        self.assertTrue(0 < binding.expires <= 600)
        # The same binding by its full AOR; ``expires`` counts down between the two dumps.
        (again,) = kam.bindings("sip:alice@127.0.0.1")
        self.assertEqual(
            dataclasses.replace(again, expires=0), dataclasses.replace(binding, expires=0)
        )
        self.assertEqual(kam.bindings("bob"), [])

    def test_tls_register_sha256(self) -> None:
        """SHA-256 digest (RFC 7616 §3.3) over TLS: challenge names it, wrong password refused.

        baresip 1.0 only does MD5, so an independent hashlib client is the witness here.
        """
        kam = self.kamailio(algorithm="SHA-256")
        result = digest_register(kam, "alice", expires=120)
        self.addCleanup(result.close)
        self.assertEqual(result.status, 200, result.response)
        self.assertIn("algorithm=SHA-256", result.challenge)
        self.assertIn('qop="auth"', result.challenge)
        (binding,) = kam.bindings("alice")
        self.assertEqual(binding.user_agent, "peers.digest_register")
        self.assertTrue(0 < binding.expires <= 120)
        bad = digest_register(kam, "bob", "not-the-password")
        self.addCleanup(bad.close)
        self.assertEqual(bad.status, 401)
        self.assertEqual(kam.bindings("bob"), [])

    def test_register_without_credentials_is_challenged(self) -> None:
        """Every REGISTER needs credentials: the first answer is 401 with a challenge."""
        kam = self.kamailio(algorithm="MD5", qop="")
        result = digest_register(kam, "nobody", "x", transport="tcp")
        self.addCleanup(result.close)
        self.assertEqual(result.status, 401)
        self.assertNotIn("qop", result.challenge)

    def test_wrong_certificates_are_served(self) -> None:
        """cert='wrong_host' / 'unknown_ca' make a verifying client fail (RFC 5922 §7)."""
        pki = get_pki()
        for which, reason in (("wrong_host", "Hostname mismatch"), ("unknown_ca", "unable")):
            kam = self.kamailio(cert=which)
            ctx = ssl.create_default_context(cafile=pki.ca.cert)
            with (
                socket.create_connection(kam.address("tls"), timeout=5) as raw,
                self.assertRaises(ssl.SSLCertVerificationError) as caught,
            ):
                ctx.wrap_socket(raw, server_hostname="localhost")
            self.assertIn(reason, str(caught.exception))
            kam.stop()
        good = self.kamailio()
        with (
            socket.create_connection(good.address("tls"), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            self.assertTrue(tls.version().startswith("TLSv1."))

    def test_stop_and_restart(self) -> None:
        """stop() ends the PID we started; restart() serves the same ports with no bindings."""
        kam = self.kamailio()
        first = digest_register(kam, "alice")
        first.close()
        self.assertEqual(len(kam.bindings("alice")), 1)
        pid = kam.pid
        kam.restart()
        self.assertNotEqual(kam.pid, pid)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        self.assertEqual(kam.bindings("alice"), [])
        again = digest_register(kam, "alice")
        self.addCleanup(again.close)
        self.assertEqual(again.status, 200)
        kam.stop()
        self.assertFalse(kam.running)
        self.assertFalse(peers.tcp_open(kam.tls_port))


class SippTests(_PeerTestCase):
    def test_uas_via_udp_receives_call_over_tls_relay(self) -> None:
        """SIPp UAS registered over UDP gets INVITE/ACK/BYE from a SIPp UAC over TLS."""
        kam = self.kamailio()
        uas = self.sipp("uas", service="bob", rtp_echo=True, timeout=20).start()
        register = self.sipp(
            "register",
            kam.address("udp"),
            service="bob",
            auth=("bob", kam.users["bob"]),
            keys={"contact_host": "127.0.0.1", "contact_port": uas.local_port, "expires": 60},
            timeout=10,
        ).run()
        self.assertSippOk(register)
        (binding,) = kam.bindings("bob")
        self.assertEqual(binding.contact, f"sip:bob@127.0.0.1:{uas.local_port};transport=udp")
        relay = TlsRelay.to_kamailio(kam, tmpdir=self.tmpdir()).start()
        self.addCleanup(relay.cleanup)
        uac = self.sipp(
            "uac_call", relay.address, transport="t1", service="bob", duration_ms=200, timeout=15
        )
        self.assertSippOk(uac.run())
        self.assertIn("SSL connection", relay.log)
        self.assertSippOk(uas.stop())
        # The BYE went through the proxy: the UAC used the Record-Route set as its route set.
        self.assertRegex(uac.messages, r"BYE sip:sipp@127\.0\.0\.1:\d+.*\n(.*\n)*?Route: <sip:127")

    def test_uac_cancel_accepts_both_response_orders(self) -> None:
        """RFC 3261 §9.2: the CANCEL's 200 and the INVITE's 487 answer two transactions and
        may arrive in either order (through Kamailio they race): uac_cancel passes with
        each, and ACKs the 487 with the INVITE's branch (§17.1.1.3).  It expected the 200
        first and made test_cancel_before_answer flaky (issue 17)."""
        for first in ("200", "487"):
            uas = _OrderedCancelUAS(first)
            self.addCleanup(uas.close)
            uac = self.sipp(
                "uac_cancel", uas.address, service="alice", duration_ms=100, timeout=10
            )
            self.assertSippOk(uac.run())
            uas.done.wait(5)
            self.assertEqual(uas.branches.get("ACK"), uas.branches["INVITE"], first)
            self.assertEqual(uas.branches["CANCEL"], uas.branches["INVITE"], first)

    def test_uac_reinvite_hold_retries_after_491(self) -> None:
        """RFC 3261 §14.1/§14.2: a re-INVITE that overtakes the ACK of the previous 2xx may
        get 491; uac_reinvite_hold ACKs it and retries (CSeq contiguous, §12.2.1.1), for the
        hold and for the resume.  It failed on a 491 and made
        test_hold_and_resume_reinvites flaky through Kamailio's UDP workers (issue 17)."""
        for refused in ((), (1,), (1, 2)):
            uas = _HoldUAS(refused)
            self.addCleanup(uas.close)
            uac = self.sipp(
                "uac_reinvite_hold", uas.address, service="alice", duration_ms=50, timeout=20
            )
            self.assertSippOk(uac.run())
            uas.done.wait(5)
            invites = [cseq for method, cseq in uas.requests if method == "INVITE"]
            self.assertEqual(invites, list(range(1, 4 + len(refused))), refused)
            self.assertEqual(uas.requests[-1], ("BYE", 4 + len(refused)), refused)

    def test_uac_scenarios_ignore_a_provisional_after_the_200(self) -> None:
        """RFC 3261 §17.1.1.2: a 1xx arriving after the INVITE's 200 (Kamailio forwards a
        UAS's 180 and 200 from different UDP workers, so they can swap) is ignored by the
        UAC scenarios.  With optional="global" SIPp went back to wait for a 200 again and
        test_uas_via_udp_receives_call_over_tls_relay timed out (issue 17)."""
        for scenario in ("uac_call", "uac_dtmf", "uac_g711a", "uac_reinvite_hold"):
            uas = _HoldUAS((), late_ringing=True)
            self.addCleanup(uas.close)
            uac = self.sipp(scenario, uas.address, service="alice", duration_ms=50, timeout=20)
            self.assertSippOk(uac.run())
            uas.done.wait(5)
            self.assertEqual(uas.requests[-1][0], "BYE", scenario)

    def test_call_to_unregistered_user(self) -> None:
        """A known user with no binding gets 480, an unknown one 404 (RFC 3261 §21.4)."""
        kam = self.kamailio()
        for user, code in (("alice", "480"), ("nobody", "404")):
            uac = self.sipp(
                "uac_call", kam.address("tcp"), transport="t1", service=user, timeout=5
            )
            self.assertFalse(uac.run().ok)
            self.assertIn(f"SIP/2.0 {code}", uac.messages)


class _OrderedCancelUAS:
    """A UDP UAS on 127.0.0.1 that rings and answers a CANCEL with the 200 and the 487 in
    the order given (*first*: ``"200"`` or ``"487"``); records each method's Via branch."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.branches: dict[str, str] = {}
        self.done = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(15)
        self.address = self.sock.getsockname()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.sock.close()
        self._thread.join(20)

    @staticmethod
    def _headers(message: str) -> dict[str, str]:
        head = message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
        return {n.strip().lower(): v.strip() for n, _, v in (h.partition(":") for h in head)}

    def _response(self, request: str, code: int, reason: str) -> bytes:
        headers = self._headers(request)
        to = headers["to"] + (";tag=uas17" if code > 100 else "")
        lines = [f"SIP/2.0 {code} {reason}", f"Via: {headers['via']}",
                 f"From: {headers['from']}", f"To: {to}", f"Call-ID: {headers['call-id']}",
                 f"CSeq: {headers['cseq']}", "Content-Length: 0"]  # fmt: skip
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _serve(self) -> None:
        invite = None
        try:
            while "ACK" not in self.branches:
                data, peer = self.sock.recvfrom(65535)
                message = data.decode()
                method = message.split(" ", 1)[0]
                via = self._headers(message).get("via", "")
                self.branches.setdefault(method, via.split("branch=", 1)[-1].split(";")[0])
                if method == "INVITE" and invite is None:
                    invite = message
                    self.sock.sendto(self._response(invite, 100, "Trying"), peer)
                    self.sock.sendto(self._response(invite, 180, "Ringing"), peer)
                elif method == "CANCEL" and invite is not None:
                    answers = [
                        self._response(message, 200, "OK"),
                        self._response(invite, 487, "Request Terminated"),
                    ]
                    for answer in answers if self.first == "200" else answers[::-1]:
                        self.sock.sendto(answer, peer)
        except OSError:
            return
        finally:
            self.done.set()


class _HoldUAS(_OrderedCancelUAS):
    """A UDP UAS that answers INVITEs with SDP (``o=voiptwisted`` versions 0, 1, 2 and
    the answering direction) and BYE with 200; the re-INVITEs numbered in *refused*
    (1: the first) get 491 first; with *late_ringing* a 180 follows the first 200 (a
    proxy's UDP workers can reorder them).  Records (method, CSeq number) of requests."""

    def __init__(self, refused: tuple[int, ...], late_ringing: bool = False) -> None:
        self.refused = set(refused)
        self.late_ringing = late_ringing
        self.requests: list[tuple[str, int]] = []
        super().__init__("200")

    def _answer(self, request: str, version: int) -> bytes:
        direction = "recvonly" if "a=sendonly" in request else "sendrecv"
        sdp = (
            f"v=0\r\no=voiptwisted 1 {version} IN IP4 127.0.0.1\r\ns=-\r\n"
            "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 8\r\n"
            f"a=rtpmap:8 PCMA/8000\r\na={direction}\r\n"
        )
        head = (
            self._response(request, 200, "OK")
            .decode()
            .replace(
                "Content-Length: 0",
                f"Contact: <sip:alice@127.0.0.1:{self.address[1]}>\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}",
            )
        )
        return (head + sdp).encode()

    def _serve(self) -> None:
        reinvites = 0
        version = 0
        try:
            while not self.requests or self.requests[-1][0] != "BYE":
                data, peer = self.sock.recvfrom(65535)
                message = data.decode()
                method = message.split(" ", 1)[0]
                cseq = int(self._headers(message)["cseq"].split()[0])
                if (method, cseq) in self.requests:
                    continue  # a retransmission
                self.requests.append((method, cseq))
                if method == "INVITE" and cseq > 1:
                    reinvites += 1
                    if reinvites in self.refused:
                        self.refused.discard(reinvites)
                        reinvites -= 1
                        self.sock.sendto(self._response(message, 491, "Request Pending"), peer)
                        continue
                    version += 1
                if method == "INVITE":
                    self.sock.sendto(self._answer(message, version), peer)
                    if cseq == 1 and self.late_ringing:
                        self.sock.sendto(self._response(message, 180, "Ringing"), peer)
                elif method == "BYE":
                    self.sock.sendto(self._response(message, 200, "OK"), peer)
        except OSError:
            return
        finally:
            self.done.set()


class BaresipTests(_PeerTestCase):
    def test_sipp_calls_baresip_rtp_recorded(self) -> None:
        """SIPp plays g711a.pcap to auto-answering baresip; its recording matches the pcap."""
        peers.require("espeak-ng", "sox")
        kam = self.kamailio()
        speech = make_speech_wav(os.path.join(self.tmpdir(), "speech.wav"), "one two three four")
        ua = self.baresip(
            account=kam.baresip_account("alice", answermode="auto"), audio_source_wav=speech
        )
        ua.wait_registered()
        uac = self.sipp(
            "uac_g711a",
            kam.address("tcp"),
            transport="t1",
            service="alice",
            duration_ms=3000,
            timeout=15,
        ).run()
        self.assertSippOk(uac)
        ua.wait_for_event("CALL_CLOSED")
        heard = [p for p in ua.recordings() if p.name.endswith("-dec.wav")]
        sent = [p for p in ua.recordings() if p.name.endswith("-enc.wav")]
        self.assertEqual((len(heard), len(sent)), (1, 1), ua.recordings())
        received = read_wav(heard[0])
        self.assertGreater(received.size, 8000 * 2)
        pcap = g711a_pcap_samples()[: 8000 * 2]
        peak, lag = xcorr_peak(pcap, received)
        self.assertGreater(peak, 0.9, (peak, lag))
        spoken = read_wav(speech)
        peak_enc, _ = xcorr_peak(spoken, read_wav(sent[0]))
        self.assertGreater(peak_enc, 0.9)

    def test_cancel_and_dtmf_scenarios(self) -> None:
        """uac_cancel gets 487 from a ringing baresip; uac_dtmf's RFC 4733 digit '1' arrives."""
        kam = self.kamailio()
        ringing = self.baresip(account=kam.baresip_account("alice"))
        answering = self.baresip(account=kam.baresip_account("bob", answermode="auto"))
        ringing.wait_registered()
        answering.wait_registered()
        cancel = self.sipp(
            "uac_cancel",
            kam.address("tcp"),
            transport="t1",
            service="alice",
            duration_ms=200,
            timeout=10,
        ).run()
        self.assertSippOk(cancel)
        ringing.wait_for_event("CALL_CLOSED")
        self.assertIn("CALL_INCOMING", [e["type"] for e in ringing.events])
        dtmf = self.sipp(
            "uac_dtmf",
            kam.address("tcp"),
            transport="t1",
            service="bob",
            duration_ms=800,
            timeout=10,
        ).run()
        self.assertSippOk(dtmf)
        event = answering.wait_for_event("CALL_DTMF_START")
        self.assertEqual(event["param"], "1")


class AudioTests(SynchronousTestCase):
    def test_xcorr_copy_and_unrelated(self) -> None:
        """A delayed, scaled, noisy copy scores > 0.9 at the right lag; unrelated < 0.3."""
        peers.require("espeak-ng", "sox")
        tmp = tempfile.mkdtemp(prefix="xcorr-")
        self.addCleanup(shutil.rmtree, tmp, True)
        a = read_wav(make_speech_wav(os.path.join(tmp, "a.wav"), "The quick brown fox"))
        b = read_wav(make_speech_wav(os.path.join(tmp, "b.wav"), "Telephones ring at noon"))
        rng = np.random.default_rng(7)
        delayed = np.concatenate((np.zeros(1234), 0.3 * a, np.zeros(800)))
        delayed = (delayed + rng.normal(0, 50, delayed.size)).astype(np.int16)
        peak, lag = xcorr_peak(a, delayed)
        self.assertGreater(peak, 0.9)
        self.assertEqual(lag, 1234)
        self.assertLess(xcorr_peak(a, b)[0], 0.3)
        self.assertLess(xcorr_peak(a, rng.normal(0, 3000, 30000).astype(np.int16))[0], 0.3)
        self.assertEqual(xcorr_peak(a, np.zeros(100, np.int16)), (0.0, 0))


class HarnessTests(SynchronousTestCase):
    def test_free_port_kinds(self) -> None:
        for kind in ("tcp", "udp"):
            port = free_port(kind)
            self.assertTrue(1024 <= port < 65536)
        with self.assertRaises(ValueError):
            free_port("sctp")

    def test_managed_process_stop_escalates(self) -> None:
        """A child that ignores SIGTERM is killed after the timeout; wait() is bounded."""
        tmp = tempfile.mkdtemp(prefix="mp-")
        self.addCleanup(shutil.rmtree, tmp, True)
        proc = peers.ManagedProcess(
            [
                "python3",
                "-c",
                "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                " print('up', flush=True); time.sleep(60)",
            ],
            os.path.join(tmp, "log"),
        )
        proc.start()
        self.addCleanup(proc.stop, 1)
        peers.wait_until(lambda: "up" in proc.read_log(), 10)
        with self.assertRaises(PeerError):
            proc.wait(0.2)
        self.assertEqual(proc.stop(timeout=0.5), -signal.SIGKILL)
        self.assertNotIn(proc, peers._live)


class MoreOptionsTests(_PeerTestCase):
    def test_auth_invite_requires_proxy_auth(self) -> None:
        """auth_invite=True: an INVITE without credentials gets 407 (RFC 3261 §22.3)."""
        kam = self.kamailio(auth_invite=True)
        uac = self.sipp("uac_call", kam.address("tcp"), transport="t1", service="bob", timeout=5)
        self.assertFalse(uac.run().ok)
        self.assertRegex(uac.messages, r"SIP/2\.0 407 .*\n(.*\n)*?Proxy-Authenticate: Digest")

    def test_baresip_dials_baresip_with_srtp(self) -> None:
        """dial()/hangup() between two baresips over TLS with SDES-SRTP; audio arrives intact."""
        peers.require("espeak-ng", "sox")
        kam = self.kamailio()
        speech = make_speech_wav(os.path.join(self.tmpdir(), "s.wav"), "secure media works")
        caller = self.baresip(
            account=kam.baresip_account("alice"), audio_source_wav=speech, srtp=True
        )
        callee = self.baresip(account=kam.baresip_account("bob", answermode="auto"), srtp=True)
        caller.wait_registered()
        callee.wait_registered()
        self.assertTrue(caller.dial(kam.uri("bob"))["ok"])
        callee.wait_for_event("CALL_ESTABLISHED")
        caller.wait_for_event("CALL_ESTABLISHED")
        peers.wait_until(lambda: callee.received_recordings(), 5, what="callee recording")
        peers.wait_until(
            lambda: os.path.getsize(callee.received_recordings()[0]) > 44 + 2 * 8000 * 3,
            10,
            what="3 s of received audio",
        )
        self.assertTrue(caller.hangup()["ok"])
        callee.wait_for_event("CALL_CLOSED")
        self.assertRegex(callee.log, r"SRTP is Enabled \(cryptosuite=AES_CM_128_HMAC_SHA1_80\)")
        peak, _ = xcorr_peak(read_wav(speech), read_wav(callee.received_recordings()[0]))
        self.assertGreater(peak, 0.9)


class RequireTests(SynchronousTestCase):
    def test_missing_program_fails_never_skips(self) -> None:
        with self.assertRaises(FailTest) as caught:
            peers.require("sh", "no-such-peer-program")
        self.assertIn("not installed: no-such-peer-program;", str(caught.exception))
        self.assertIn("scripts/install-deps.sh", str(caught.exception))
        peers.require("sh")
