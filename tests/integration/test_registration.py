"""Registration against a real Kamailio over TLS on 127.0.0.1 (RFC 3261 §10, RFC 5626).

Kamailio is started and stopped by these tests (by PID, through tests.integration.peers).
"""

from __future__ import annotations

import random
import time

from twisted.internet import reactor, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.integration.peers import Kamailio
from voiptwisted.media import MediaConfig
from voiptwisted.media.session import Session
from voiptwisted.sip.connect import TLSVerificationFailed, build_client, run
from voiptwisted.sip.dialog import CallFailed, Dialog
from voiptwisted.sip.registration import RegistrationFailed, RegistrationState
from voiptwisted.sip.uri import SipURI

INSTANCE = "0b6f5e4a-3c2d-4e1f-8a9b-c0d1e2f3a4b5"


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def eventually(predicate, timeout: float, what: str):
    """Poll ``predicate`` without blocking the reactor; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await sleep(0.1)



def problem_lines(events: list[dict]) -> list[str]:
    """The warning and error lines logged (what an operator sees as problems)."""
    levels = (LogLevel.warn, LogLevel.error, LogLevel.critical)
    return [formatEvent(e) for e in events if e.get("log_level") in levels]


class KamailioRegistrationTests(TestCase):
    timeout = 90

    def kamailio(self, **kwargs) -> Kamailio:
        kamailio = Kamailio(**kwargs)
        self.addCleanup(kamailio.cleanup)
        kamailio.start()
        return kamailio

    def aor(self, kamailio: Kamailio, user: str = "alice") -> SipURI:
        host, port = kamailio.address("tls")
        return SipURI.parse(f"sip:{user}@{host}:{port}")

    def capture(self) -> list[dict]:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    async def start(self, kamailio: Kamailio, **kwargs):
        kwargs.setdefault("password", "secret")
        kwargs.setdefault("ca_file", kamailio.ca_cert)
        kwargs.setdefault("instance_id", INSTANCE)
        protocol = await run(self.aor(kamailio), reactor=reactor, **kwargs)
        self.addCleanup(protocol.service.stopService)
        return protocol

    def alice(self, kamailio: Kamailio):
        return kamailio.bindings("alice")

    async def test_register_and_unregister(self) -> None:
        """RFC 3261 §10.2 + RFC 5626 §4.2: TLS REGISTER with digest; the binding carries our
        +sip.instance; stop sends Expires: 0 and the binding is gone (RFC 3261 §10.2.2)."""
        kamailio = self.kamailio()
        protocol = await self.start(kamailio)
        registration = protocol.service.registration
        self.assertTrue(registration.registered)
        self.assertTrue(protocol.is_secure)
        bindings = await eventually(lambda: self.alice(kamailio), 5, "alice's binding")
        self.assertEqual(len(bindings), 1)
        self.assertIn(INSTANCE, bindings[0].instance or bindings[0].contact)
        self.assertIsNotNone(protocol.public_address)
        await protocol.service.stopService()
        await eventually(lambda: not self.alice(kamailio), 5, "binding removed")
        self.assertEqual(registration.state, RegistrationState.STOPPED)

    async def test_refresh_short_expiry(self) -> None:
        """RFC 3261 §10.2.4: the binding is refreshed before it expires."""
        kamailio = self.kamailio(min_expires=5)
        protocol = await self.start(kamailio, expires=8)
        registration = protocol.service.registration
        self.assertEqual(registration.granted_expires, 8)
        await eventually(lambda: registration.success_count >= 3, 15, "two refreshes")
        self.assertTrue(registration.registered)
        self.assertEqual(len(self.alice(kamailio)), 1)

    async def test_wrong_password(self) -> None:
        """A repeated challenge is a refusal: one log line, and no tight loop."""
        kamailio = self.kamailio()
        events = self.capture()
        client = build_client(
            self.aor(kamailio),
            password="wrong",
            ca_file=kamailio.ca_cert,
            reactor=reactor,
            instance_id=INSTANCE,
        )
        registration = client.registration
        client.startService()
        self.addCleanup(client.stopService)
        await eventually(
            lambda: registration.state is RegistrationState.FAILED, 10, "registration refused"
        )
        await sleep(3)
        self.assertEqual(registration.register_count, 2)
        errors = problem_lines(events)
        self.assertEqual(len(errors), 1, errors)  # one attempt: one warn-or-error line in all
        self.assertIn("wrong credentials", errors[0])
        self.assertNotIn("wrong", errors[0].replace("wrong credentials", ""))
        self.assertEqual(self.alice(kamailio), [])

    async def test_wrong_password_fails_run(self) -> None:
        kamailio = self.kamailio()
        with self.assertRaises(RegistrationFailed) as caught:
            await run(
                self.aor(kamailio),
                password="wrong",
                ca_file=kamailio.ca_cert,
                reactor=reactor,
                instance_id=INSTANCE,
            )
        self.assertIn("wrong credentials", str(caught.exception))

    async def test_unknown_ca_refused(self) -> None:
        """A certificate from an unknown CA is refused, the log names it."""
        kamailio = self.kamailio(cert="unknown_ca")
        events = self.capture()
        with self.assertRaises(TLSVerificationFailed) as caught:
            await run(
                self.aor(kamailio),
                password="secret",
                ca_file=kamailio.ca_cert,
                reactor=reactor,
                instance_id=INSTANCE,
            )
        self.assertIn("unknown CA", str(caught.exception))
        # Issues 3/6: the endpoint's clear line only, not also "registration ... failed:
        # Error: [('SSL routines' ..." (that one was a warning, so count both levels).
        errors = problem_lines(events)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("refused: unknown CA", errors[0])
        self.assertEqual(self.alice(kamailio), [])

    async def test_wrong_hostname_refused(self) -> None:
        """RFC 5922 §7.2: a certificate not valid for the SIP domain is refused."""
        kamailio = self.kamailio(cert="wrong_host")
        with self.assertRaises(TLSVerificationFailed) as caught:
            await run(
                self.aor(kamailio),
                password="secret",
                ca_file=kamailio.ca_cert,
                reactor=reactor,
                instance_id=INSTANCE,
            )
        self.assertIn("hostname mismatch", str(caught.exception))
        self.assertEqual(self.alice(kamailio), [])

    async def test_kamailio_restart_registers_again(self) -> None:
        """A lost flow is reconnected and the new flow registers (RFC 5626 §4.4.1, issue 3)."""
        kamailio = self.kamailio()
        protocol = await self.start(kamailio)
        registration = protocol.service.registration
        await eventually(lambda: self.alice(kamailio), 5, "first binding")
        kamailio.restart()
        self.assertEqual(self.alice(kamailio), [])
        await eventually(lambda: self.alice(kamailio), 30, "binding after restart")
        self.assertTrue(registration.registered)
        self.assertIsNot(registration.protocol, protocol)
        self.assertGreaterEqual(registration.success_count, 2)

    async def test_sha256_qop_auth(self) -> None:
        """RFC 8760 / RFC 7616: Kamailio with algorithm=SHA-256 and qop=auth."""
        kamailio = self.kamailio(algorithm="SHA-256", qop="auth")
        protocol = await self.start(kamailio)
        self.assertTrue(protocol.service.registration.registered)
        await eventually(lambda: self.alice(kamailio), 5, "SHA-256 binding")

    async def test_sha256_invite_challenge_for_the_registrar_realm(self) -> None:
        """Issue 14: the registrar's SHA-256 challenge binds its realm, so Kamailio's 407 to
        our INVITE (same realm, RFC 3261 §22.3) is answered: the call fails on its merits
        (404, no such user), not on the challenge."""
        kamailio = self.kamailio(algorithm="SHA-256", qop="auth", auth_invite=True)
        base = random.randrange(40000, 60000, 2)
        protocol = await self.start(
            kamailio,
            media_config=MediaConfig(port_range=(base, base + 20), srtp="off", reactor=reactor),
        )
        self.assertEqual(protocol.credentials.registrar_realm, kamailio.realm)
        host, port = kamailio.address("tls")
        with self.assertRaises(CallFailed) as caught:
            await Dialog(sip=protocol).dial(f"sip:nobody@{host}:{port}", session_class=Session)
        self.assertEqual(caught.exception.status_code, 404)

    async def test_qop_less_md5_needs_allow_legacy_digest(self) -> None:
        """Issue 14: a registrar offering only qop-less MD5 (RFC 2069) is refused with a
        message naming the option; with allow_legacy_digest it registers."""
        kamailio = self.kamailio(algorithm="MD5", qop="")
        with self.assertRaises(RegistrationFailed) as caught:
            await self.start(kamailio)
        self.assertIn("--allow-legacy-digest", str(caught.exception))
        self.assertEqual(self.alice(kamailio), [])
        protocol = await self.start(kamailio, allow_legacy_digest=True)
        self.assertTrue(protocol.service.registration.registered)
        await eventually(lambda: self.alice(kamailio), 5, "legacy MD5 binding")

    async def test_keepalive_pongs(self) -> None:
        """RFC 5626 §4.4.1: Kamailio answers our CRLFCRLF pings with CRLF; the flow stays up."""
        kamailio = self.kamailio()
        protocol = await self.start(kamailio, keepalive=1)
        keepalive = protocol.service.keepalive
        await eventually(lambda: keepalive.pongs_received >= 3, 10, "three pongs")
        self.assertIs(protocol.service.registration.protocol, protocol)
        self.assertIsNotNone(protocol.transport)
