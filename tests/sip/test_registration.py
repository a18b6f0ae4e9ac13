"""Tests for voiptwisted.sip.registration: REGISTER per RFC 3261 §10.2 on a fake protocol."""

from __future__ import annotations

import hashlib
import re

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.sip.digest import Credentials
from voiptwisted.sip.message import Request, Response
from voiptwisted.sip.registration import (
    Registration,
    RegistrationFailed,
    RegistrationState,
    normalize_instance_id,
    refresh_delay,
)
from voiptwisted.sip.transaction import TransactionTimeout
from voiptwisted.sip.uri import NetworkAddress, SipURI

INSTANCE = "6e1c9a3e-2b8f-4c1d-9f00-0123456789ab"
PASSWORD = "s3cret-Pa55"
CONTACT = "<sip:alice@10.0.0.5:40000;transport=tls;ob>"


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 5061)


class FakeKeepalive:
    def __init__(self) -> None:
        self.intervals: list[float] = []
        self.outbound: list[bool] = []

    def set_interval(self, seconds: float) -> None:
        self.intervals.append(seconds)

    def registrar_outbound(self, supported: bool) -> None:
        self.outbound.append(supported)


class FakeProtocol:
    """Stands in for SessionInitiationProtocol: records send_request calls."""

    def __init__(self) -> None:
        self.sent: list[tuple[Request, Deferred[Response]]] = []
        self.contact = CONTACT
        self.public_address: NetworkAddress | None = None
        self.keepalive = FakeKeepalive()
        self.transport = FakeTransport()

    def send_request(self, request: Request) -> Deferred[Response]:
        d: Deferred[Response] = Deferred()
        self.sent.append((request, d))
        return d

    @property
    def last(self) -> Request:
        return self.sent[-1][0]

    def answer(self, code: int, *headers: tuple[str, str], index: int = -1) -> None:
        request, d = self.sent[index]
        base = [
            ("Via", "SIP/2.0/TLS 10.0.0.5:40000;branch=z9hG4bKabc;received=192.0.2.7;rport=41234"),
            ("From", request.headers["From"]),
            ("To", request.headers["To"] + (";tag=srv" if code > 100 else "")),
            ("Call-ID", request.headers["Call-ID"]),
            ("CSeq", request.headers["CSeq"]),
        ]
        d.callback(Response(code, headers=base + list(headers)))


def make_registration(**kwargs) -> tuple[Registration, FakeProtocol, task.Clock, list[dict]]:
    clock = task.Clock()
    events: list[dict] = []
    kwargs.setdefault("password", PASSWORD)
    registration = Registration(
        SipURI.parse("sip:alice@example.com:5061"),
        reactor=clock,
        instance_id=INSTANCE,
        **kwargs,
    )
    registration.log = Logger(observer=events.append)
    protocol = FakeProtocol()
    return registration, protocol, clock, events


def digest_params(value: str) -> dict[str, str]:
    assert value.startswith("Digest ")
    return {
        m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
        for m in re.finditer(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)
    }


def expected_response(params: dict[str, str], password: str, method: str = "REGISTER") -> str:
    algorithm = params.get("algorithm", "MD5").upper()
    hash_name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm]

    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode()).hexdigest()

    ha1 = h(f"{params['username']}:{params['realm']}:{password}")
    ha2 = h(f"{method}:{params['uri']}")
    if "qop" in params:
        return h(
            f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}"
        )
    return h(f"{ha1}:{params['nonce']}:{ha2}")


def messages(events: list[dict]) -> list[str]:
    return [formatEvent(event) for event in events]


class RegisterRequestTests(SynchronousTestCase):
    def test_register_fields(self) -> None:
        """RFC 3261 §10.2: Request-URI is the domain, To/From the AOR with a From tag;
        RFC 5626 §4.2.1: Contact has +sip.instance and reg-id, Supported: outbound, path."""
        registration, protocol, _, _ = make_registration()
        registration.connection_made(protocol)
        self.assertEqual(registration.state, RegistrationState.REGISTERING)
        request = protocol.last
        self.assertEqual(request.method, "REGISTER")
        self.assertEqual(request.uri, "sip:example.com:5061")
        self.assertEqual(request.headers["To"], "<sip:alice@example.com>")
        self.assertRegex(request.headers["From"], r"^<sip:alice@example\.com>;tag=[0-9a-f]{16}$")
        self.assertEqual(
            request.headers["Contact"],
            CONTACT + f';+sip.instance="<urn:uuid:{INSTANCE}>";reg-id=1',
        )
        self.assertEqual(request.headers["Supported"], "outbound, path")
        self.assertEqual(request.headers["Expires"], "3600")
        self.assertEqual(request.cseq, (1, "REGISTER"))
        self.assertNotIn("Authorization", request.headers)

    def test_request_uri_of_default_port_and_ipv6(self) -> None:
        """RFC 3261 §10.2: no user part in the Request-URI; IPv6 hosts in brackets."""
        registration = Registration(
            SipURI.parse("sips:bob@[::1]"), reactor=task.Clock(), instance_id=INSTANCE
        )
        self.assertEqual(registration.request_uri, "sips:[::1]")

    def test_same_call_id_and_increasing_cseq(self) -> None:
        """RFC 3261 §10.2.4: every REGISTER of a UA has the same Call-ID, CSeq increments."""
        registration, protocol, clock, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(200, ("Expires", "100"))
        clock.advance(50)
        registration.connection_lost(protocol)
        second = FakeProtocol()
        registration.connection_made(second)
        call_ids = {r.headers["Call-ID"] for r, _ in protocol.sent + second.sent}
        self.assertEqual(len(call_ids), 1)
        cseqs = [r.cseq[0] for r, _ in protocol.sent + second.sent]
        self.assertEqual(cseqs, [1, 2, 3])
        tags = {r.from_.params["tag"] for r, _ in protocol.sent + second.sent}
        self.assertEqual(len(tags), 3)

    def test_user_agent(self) -> None:
        registration, protocol, _, _ = make_registration(user_agent="test-ua/1")
        registration.connection_made(protocol)
        self.assertEqual(protocol.last.headers["User-Agent"], "test-ua/1")

    def test_instance_id_forms(self) -> None:
        """RFC 5626 §4.1: the instance is a urn:uuid URN."""
        self.assertEqual(normalize_instance_id(INSTANCE.upper()), f"urn:uuid:{INSTANCE}")
        self.assertEqual(normalize_instance_id(f"urn:uuid:{INSTANCE}"), f"urn:uuid:{INSTANCE}")
        self.assertRaises(ValueError, normalize_instance_id, "not-a-uuid")

    def test_invalid_expires(self) -> None:
        self.assertRaises(
            ValueError,
            Registration,
            SipURI.parse("sip:a@b"),
            reactor=task.Clock(),
            instance_id=INSTANCE,
            expires=0,
        )


class DigestTests(SynchronousTestCase):
    def test_401_md5(self) -> None:
        """RFC 3261 §22.2: answer 401 with Authorization computed from the challenge."""
        registration, protocol, _, _ = make_registration()
        registered = registration.when_registered()
        registration.connection_made(protocol)
        protocol.answer(
            401, ("WWW-Authenticate", 'Digest realm="example.com", nonce="n1", qop="auth"')
        )
        self.assertEqual(len(protocol.sent), 2)
        request = protocol.last
        self.assertEqual(request.cseq[0], 2)
        params = digest_params(request.headers["Authorization"])
        self.assertEqual(params["username"], "alice")
        self.assertEqual(params["uri"], "sip:example.com:5061")
        self.assertEqual(params["response"], expected_response(params, PASSWORD))
        self.assertNoResult(registered)
        protocol.answer(200, ("Expires", "3600"))
        self.assertIs(self.successResultOf(registered), protocol)
        self.assertTrue(registration.registered)

    def test_407_sha256_qop_auth(self) -> None:
        """RFC 3261 §22.3 + RFC 8760: 407 -> Proxy-Authorization, SHA-256 with qop=auth,
        cnonce and nc=00000001 (RFC 7616 §3.4)."""
        registration, protocol, _, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(
            407,
            (
                "Proxy-Authenticate",
                'Digest realm="r", nonce="abc", algorithm=SHA-256, qop="auth", opaque="op"',
            ),
        )
        request = protocol.last
        self.assertNotIn("Authorization", request.headers)
        params = digest_params(request.headers["Proxy-Authorization"])
        self.assertEqual(params["algorithm"], "SHA-256")
        self.assertEqual(params["qop"], "auth")
        self.assertEqual(params["nc"], "00000001")
        self.assertEqual(params["opaque"], "op")
        self.assertEqual(params["response"], expected_response(params, PASSWORD))

    def test_first_supported_challenge_is_used(self) -> None:
        """RFC 8760 §2.4: skip challenges with algorithms we cannot answer."""
        registration, protocol, _, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(
            401,
            ("WWW-Authenticate", 'Digest realm="r", nonce="a", algorithm=SHA-999'),
            ("WWW-Authenticate", 'Digest realm="r", nonce="b", algorithm=MD5, qop="auth"'),
        )
        params = digest_params(protocol.last.headers["Authorization"])
        self.assertEqual(params["nonce"], "b")

    def test_stale_nonce_is_retried(self) -> None:
        """RFC 7616 §3.3: stale=true means the credentials were right; retry with the new nonce."""
        registration, protocol, _, events = make_registration()
        registration.connection_made(protocol)
        protocol.answer(401, ("WWW-Authenticate", 'Digest realm="r", nonce="n1", qop="auth"'))
        protocol.answer(
            401, ("WWW-Authenticate", 'Digest realm="r", nonce="n2", stale=true, qop="auth"')
        )
        self.assertEqual(len(protocol.sent), 3)
        self.assertEqual(digest_params(protocol.last.headers["Authorization"])["nonce"], "n2")
        protocol.answer(200)
        self.assertTrue(registration.registered)
        self.assertEqual([e for e in events if e["log_level"].name == "error"], [])

    def test_repeated_challenge_is_wrong_credentials(self) -> None:
        """RFC 3261 §22.2: the same challenge again for the same credentials is a refusal:
        one log line, and no new REGISTER for at least 60 s (no tight loop)."""
        registration, protocol, clock, events = make_registration()
        registered = registration.when_registered()
        registration.connection_made(protocol)
        challenge = ("WWW-Authenticate", 'Digest realm="r", nonce="n1", qop="auth"')
        protocol.answer(401, challenge)
        protocol.answer(401, challenge)
        self.assertEqual(registration.state, RegistrationState.FAILED)
        errors = [formatEvent(e) for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn(
            "registration refused by 127.0.0.1:5061: wrong credentials "
            "(401 Unauthorized again after authenticating)",
            errors[0],
        )
        failure = self.failureResultOf(registered, RegistrationFailed)
        self.assertEqual(failure.value.status_code, 401)
        sent = len(protocol.sent)
        clock.advance(59.9)
        self.assertEqual(len(protocol.sent), sent)
        clock.advance(0.2)
        self.assertEqual(len(protocol.sent), sent + 1)
        params = digest_params(protocol.last.headers["Authorization"])
        self.assertEqual(params["nonce"], "n1")  # issue 17: the retry answers the challenge

    def test_wrong_password_one_register_per_retry(self) -> None:
        """Issue 17: with wrong credentials each retry answers the challenge that refused the
        last one: one REGISTER per retry interval (was an unauthenticated one plus a digest
        one), even from a registrar that puts a new nonce in every 401 (Kamailio does)."""
        registration, protocol, clock, _ = make_registration()
        registration.connection_made(protocol)
        nonces = iter(f"n{i}" for i in range(100))

        def refuse() -> None:
            challenge = f'Digest realm="r", nonce="{next(nonces)}", qop="auth"'
            protocol.answer(401, ("WWW-Authenticate", challenge))

        refuse()
        refuse()
        self.assertEqual((len(protocol.sent), registration.state), (2, RegistrationState.FAILED))
        for interval in range(1, 6):
            clock.advance(60)
            self.assertEqual(len(protocol.sent), 2 + interval)
            refuse()
            self.assertEqual(registration.state, RegistrationState.FAILED)
            self.assertEqual(len(protocol.sent), 2 + interval)
        self.assertEqual(registration.register_count, 7)
        answered = [
            digest_params(r.headers["Authorization"])["nonce"] for r, _ in protocol.sent[1:]
        ]
        self.assertEqual(answered, ["n0", "n1", "n2", "n3", "n4", "n5"])
        clock.advance(60)
        protocol.answer(200, ("Expires", "3600"))
        self.assertTrue(registration.registered)  # the password was fixed on the registrar
        clock.advance(3600)
        self.assertNotIn("Authorization", protocol.last.headers)  # forgotten after a success

    def test_stale_answer_to_remembered_challenge_allows_one_more_try(self) -> None:
        """Issue 17 / RFC 7616 §3.3: the retry's remembered nonce expired meanwhile
        (``stale=true``, a new nonce): one more REGISTER with the new nonce in that retry;
        a second stale 401 is a refusal, not a loop."""

        def stale(nonce: str) -> str:
            return f'Digest realm="r", nonce="{nonce}", stale=true, qop="auth"'

        registration, protocol, clock, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(401, ("WWW-Authenticate", 'Digest realm="r", nonce="n1", qop="auth"'))
        protocol.answer(401, ("WWW-Authenticate", 'Digest realm="r", nonce="n1", qop="auth"'))
        clock.advance(60)
        self.assertEqual(len(protocol.sent), 3)
        protocol.answer(401, ("WWW-Authenticate", stale("n2")))
        self.assertEqual(len(protocol.sent), 4)
        self.assertEqual(digest_params(protocol.last.headers["Authorization"])["nonce"], "n2")
        protocol.answer(401, ("WWW-Authenticate", stale("n3")))
        self.assertEqual((len(protocol.sent), registration.state), (4, RegistrationState.FAILED))
        clock.advance(60)
        self.assertEqual(len(protocol.sent), 5)
        protocol.answer(401, ("WWW-Authenticate", stale("n3")))
        self.assertEqual((len(protocol.sent), registration.state), (5, RegistrationState.FAILED))

    def test_password_never_logged(self) -> None:
        registration, protocol, clock, events = make_registration()
        registration.connection_made(protocol)
        protocol.answer(401, ("WWW-Authenticate", 'Digest realm="r", nonce="n1", qop="auth"'))
        for _ in range(3):
            protocol.answer(401, ("WWW-Authenticate", 'Digest realm="r", nonce="n1", qop="auth"'))
            clock.advance(60)
        self.assertTrue(events)
        for text in [*messages(events), repr(registration)]:
            self.assertNotIn(PASSWORD, text)

    def test_401_without_password(self) -> None:
        registration, protocol, _, events = make_registration(password=None)
        registration.connection_made(protocol)
        protocol.answer(401, ("WWW-Authenticate", 'Digest realm="r", nonce="n1"'))
        self.assertEqual(registration.state, RegistrationState.FAILED)
        self.assertIn("no password is configured", " ".join(messages(events)))

    def test_garbage_challenge(self) -> None:
        """A malformed challenge is a refusal, never an exception out of the protocol."""
        registration, protocol, _, events = make_registration()
        registration.connection_made(protocol)
        protocol.answer(401, ("WWW-Authenticate", "Basic realm=x"))
        self.assertEqual(registration.state, RegistrationState.FAILED)
        self.assertIn("no usable challenge", " ".join(messages(events)))

    def test_first_challenge_binds_the_registrar_realm(self) -> None:
        """Issue 14: the registrar's first challenge binds its realm in the Credentials the
        flows share; a later REGISTER challenge for another realm is refused."""
        credentials = Credentials("alice", PASSWORD)
        registration, protocol, _, events = make_registration(
            password=None, credentials=credentials
        )
        registration.connection_made(protocol)
        protocol.answer(
            401, ("WWW-Authenticate", 'Digest realm="example.com", nonce="n1", qop="auth"')
        )
        self.assertEqual(credentials.registrar_realm, "example.com")
        self.assertTrue(credentials.allows("example.com"))
        protocol.answer(200, ("Expires", "3600"))
        self.assertTrue(registration.registered)
        registration._register(RegistrationState.REFRESHING)
        protocol.answer(
            401, ("WWW-Authenticate", 'Digest realm="elsewhere", nonce="n2", qop="auth"')
        )
        self.assertNotIn("Authorization", protocol.last.headers)
        errors = [formatEvent(e) for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("realm 'elsewhere'", errors[0])
        self.assertIn("--auth-realm", errors[0])

    def test_strongest_challenge_is_used(self) -> None:
        """RFC 8760 §2.4: SHA-256 is answered although MD5 is listed first."""
        registration, protocol, _, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(
            401,
            ("WWW-Authenticate", 'Digest realm="r", nonce="m", algorithm=MD5, qop="auth"'),
            ("WWW-Authenticate", 'Digest realm="r", nonce="s", algorithm=SHA-256, qop="auth"'),
        )
        params = digest_params(protocol.last.headers["Authorization"])
        self.assertEqual((params["algorithm"], params["nonce"]), ("SHA-256", "s"))
        self.assertEqual(params["response"], expected_response(params, PASSWORD))

    def test_qop_less_md5_refused_unless_allowed(self) -> None:
        """RFC 2069-style MD5 (no qop, no cnonce) is a refusal naming the option to allow it."""
        legacy = ("WWW-Authenticate", 'Digest realm="r", nonce="n1"')
        registration, protocol, _, events = make_registration()
        registration.connection_made(protocol)
        protocol.answer(401, legacy)
        self.assertEqual((len(protocol.sent), registration.state), (1, RegistrationState.FAILED))
        self.assertIn("--allow-legacy-digest", " ".join(messages(events)))
        allowed = Credentials("alice", PASSWORD, allow_legacy_digest=True)
        registration, protocol, _, _ = make_registration(password=None, credentials=allowed)
        registration.connection_made(protocol)
        protocol.answer(401, legacy)
        params = digest_params(protocol.last.headers["Authorization"])
        self.assertEqual(params["response"], expected_response(params, PASSWORD))

    def test_non_ascii_challenge_is_a_refusal(self) -> None:
        """Issue 14 finding 8: an undecodable byte in the challenge fails the registration
        with one error line, never a UnicodeEncodeError."""
        registration, protocol, _, events = make_registration()
        registered = registration.when_registered()
        registration.connection_made(protocol)
        protocol.answer(401, ("WWW-Authenticate", 'Digest realm="r\udcff", nonce="n", qop="auth"'))
        self.assertEqual(
            self.failureResultOf(registered, RegistrationFailed).value.status_code, 401
        )
        errors = [formatEvent(e) for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("non-ASCII", errors[0])


class OutcomeTests(SynchronousTestCase):
    def test_tls_failure_under_register_is_not_logged_again(self) -> None:
        """Issues 3/6: a certificate refused while REGISTER is pending kills the flow; the
        endpoint already logged it, so registration adds no line and no retry timer."""
        from OpenSSL import SSL

        registration, protocol, _, events = make_registration()
        registration.connection_made(protocol)
        protocol.transport = None  # SessionInitiationProtocol.connectionLost does this first
        protocol.sent[0][1].errback(SSL.Error([("SSL routines", "", "certificate verify failed")]))
        registration.connection_lost(protocol, None)
        self.assertEqual(messages(events), [])
        self.assertEqual(registration.pending_timer_count, 0)
        self.assertEqual(registration.state, RegistrationState.IDLE)

    def test_flow_closed_under_register_is_one_info_line(self) -> None:
        """A plain connection loss under REGISTER: one info line, no retry timer of ours
        (the reconnecting service makes the next flow, which registers)."""
        registration, protocol, clock, events = make_registration()
        registration.connection_made(protocol)
        protocol.transport = None
        protocol.sent[0][1].errback(ConnectionLost("reset by peer"))
        registration.connection_lost(protocol, None)
        [event] = events
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertIn("closed before the registrar answered", formatEvent(event))
        clock.advance(3600)
        self.assertEqual(len(protocol.sent), 1)

    def test_403_forbidden(self) -> None:
        """A final 4xx refusal: one log line naming the status; retry after >= 60 s."""
        registration, protocol, clock, events = make_registration()
        registration.connection_made(protocol)
        protocol.answer(403)
        text = messages(events)
        self.assertEqual(len(text), 1)
        self.assertIn("registration refused by 127.0.0.1:5061: 403 Forbidden", text[0])
        clock.advance(59)
        self.assertEqual(len(protocol.sent), 1)
        clock.advance(1)
        self.assertEqual(len(protocol.sent), 2)

    def test_retry_after_longer_than_a_minute(self) -> None:
        registration, protocol, clock, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(404, ("Retry-After", "300"))
        clock.advance(299)
        self.assertEqual(len(protocol.sent), 1)
        clock.advance(1)
        self.assertEqual(len(protocol.sent), 2)

    def test_423_min_expires(self) -> None:
        """RFC 3261 §10.2.8: 423 -> retry with Expires = Min-Expires."""
        registration, protocol, _, _ = make_registration(expires=60)
        registration.connection_made(protocol)
        protocol.answer(423, ("Min-Expires", "600"))
        self.assertEqual(protocol.last.headers["Expires"], "600")
        protocol.answer(200)
        self.assertEqual(registration.granted_expires, 600)

    def test_423_without_usable_min_expires(self) -> None:
        registration, protocol, _, _ = make_registration(expires=600)
        registration.connection_made(protocol)
        protocol.answer(423, ("Min-Expires", "300"))
        self.assertEqual(registration.state, RegistrationState.FAILED)
        self.assertEqual(len(protocol.sent), 1)

    def test_503_backs_off_with_policy(self) -> None:
        registration, protocol, clock, _ = make_registration(retry_policy=lambda n: 2.0**n)
        registration.connection_made(protocol)
        protocol.answer(503)
        self.assertEqual(registration.state, RegistrationState.BACKING_OFF)
        clock.advance(1)
        self.assertEqual(len(protocol.sent), 2)
        protocol.answer(503)
        clock.advance(1.9)
        self.assertEqual(len(protocol.sent), 2)
        clock.advance(0.1)
        self.assertEqual(len(protocol.sent), 3)

    def test_transaction_timeout_backs_off(self) -> None:
        registration, protocol, clock, events = make_registration(retry_policy=lambda n: 5.0)
        registration.connection_made(protocol)
        protocol.sent[-1][1].errback(TransactionTimeout("REGISTER", "F", 32))
        self.assertEqual(registration.state, RegistrationState.BACKING_OFF)
        self.assertIn("Timer F", " ".join(messages(events)))
        clock.advance(5)
        self.assertEqual(len(protocol.sent), 2)


class ExpiryTests(SynchronousTestCase):
    def test_expires_from_our_contact(self) -> None:
        """RFC 3261 §10.2.4 + RFC 5626 §4.2.1: our Contact (by +sip.instance) sets the expiry."""
        registration, protocol, _, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(
            200,
            ("Contact", "<sip:other@192.0.2.1>;expires=50"),
            (
                "Contact",
                f'<sip:alice@10.0.0.5:40000>;+sip.instance="<urn:uuid:{INSTANCE}>"'
                ";reg-id=1;expires=120",
            ),
            ("Expires", "900"),
        )
        self.assertEqual(registration.granted_expires, 120)

    def test_expires_from_our_contact_uri_without_instance(self) -> None:
        """RFC 3261 §10.2.4: the UA finds its own binding among all returned Contacts by
        comparing URIs (§19.1.4) when the registrar drops +sip.instance; its expires wins
        over the Expires header."""
        registration, protocol, _, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(
            200,
            ("Contact", "<sip:other@192.0.2.1>;expires=3000"),
            ("Contact", "<sip:alice@10.0.0.5:40000;TRANSPORT=TLS;ob>;expires=60"),
            ("Expires", "3600"),
        )
        self.assertEqual(registration.granted_expires, 60)

    def test_expires_header_then_requested(self) -> None:
        registration, protocol, _, _ = make_registration(expires=1800)
        registration.connection_made(protocol)
        protocol.answer(200, ("Expires", "900"))
        self.assertEqual(registration.granted_expires, 900)
        registration2, protocol2, _, _ = make_registration(expires=1800)
        registration2.connection_made(protocol2)
        protocol2.answer(200)
        self.assertEqual(registration2.granted_expires, 1800)

    def test_refresh_delay(self) -> None:
        """Refresh well before expiry: half the time, and >= 5 s early (RFC 3261 §10.2.4)."""
        self.assertEqual(refresh_delay(3600), 1800)
        self.assertEqual(refresh_delay(10), 5)
        self.assertEqual(refresh_delay(8), 3)
        self.assertEqual(refresh_delay(1), 1)

    def test_refresh_timing(self) -> None:
        registration, protocol, clock, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(200, ("Expires", "600"))
        clock.advance(299)
        self.assertEqual(len(protocol.sent), 1)
        clock.advance(1)
        self.assertEqual(len(protocol.sent), 2)
        self.assertEqual(registration.state, RegistrationState.REFRESHING)
        self.assertTrue(registration.registered)
        protocol.answer(200, ("Expires", "600"))
        self.assertEqual(registration.state, RegistrationState.REGISTERED)
        clock.advance(300)
        self.assertEqual(len(protocol.sent), 3)

    def test_zero_expiry_in_200_is_failure(self) -> None:
        registration, protocol, _, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(200, ("Expires", "0"))
        self.assertEqual(registration.state, RegistrationState.FAILED)

    def test_flow_timer(self) -> None:
        """RFC 5626 §4.4.1: the Flow-Timer of the 200 becomes the keepalive interval."""
        registration, protocol, _, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(200, ("Flow-Timer", "25"))
        self.assertEqual(protocol.keepalive.intervals, [25])
        self.assertEqual(registration.flow_timer, 25)

    def test_require_outbound_tells_the_keepalive(self) -> None:
        """RFC 5626 §4.2.1: the keepalive learns from each 2xx whether the registrar
        signalled outbound (``Require: outbound``); only then is a pong owed."""
        registration, protocol, clock, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(200, ("Require", "path, Outbound"))
        clock.advance(registration.granted_expires)
        protocol.answer(200)
        self.assertEqual(protocol.keepalive.outbound, [True, False])

    def test_public_address_from_via(self) -> None:
        """RFC 3581 §4: received/rport of the top Via give our public address."""
        registration, protocol, _, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(200)
        self.assertEqual(protocol.public_address, NetworkAddress.parse("192.0.2.7:41234"))


class LifecycleTests(SynchronousTestCase):
    def test_connection_lost_stops_timers(self) -> None:
        registration, protocol, clock, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(200)
        self.assertEqual(registration.pending_timer_count, 1)
        registration.connection_lost(protocol, None)
        self.assertEqual(registration.pending_timer_count, 0)
        self.assertEqual(registration.state, RegistrationState.IDLE)
        clock.advance(7200)
        self.assertEqual(len(protocol.sent), 1)

    def test_connection_lost_during_register(self) -> None:
        """A late answer on a dead flow is ignored; the new flow registers afresh."""
        registration, protocol, _, _ = make_registration()
        registration.connection_made(protocol)
        registration.connection_lost(protocol, None)
        second = FakeProtocol()
        registration.connection_made(second)
        self.assertEqual(len(second.sent), 1)
        self.assertFalse(registration.registered)
        second.answer(200)
        self.assertTrue(registration.registered)

    def test_stop_unregisters(self) -> None:
        """RFC 3261 §10.2.2: stop sends REGISTER with Expires: 0 for our Contact."""
        registration, protocol, _, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(200)
        contact = protocol.sent[0][0].headers["Contact"]
        stopped = registration.stop()
        self.assertNoResult(stopped)
        request = protocol.last
        self.assertEqual(request.headers["Expires"], "0")
        self.assertEqual(request.headers["Contact"], contact)
        protocol.answer(401, ("WWW-Authenticate", 'Digest realm="r", nonce="x", qop="auth"'))
        self.assertIn("Authorization", protocol.last.headers)
        protocol.answer(200)
        self.successResultOf(stopped)
        self.assertEqual(registration.state, RegistrationState.STOPPED)
        self.assertEqual(registration.pending_timer_count, 0)

    def test_stop_times_out(self) -> None:
        registration, protocol, clock, _ = make_registration(unregister_timeout=5.0)
        registration.connection_made(protocol)
        protocol.answer(200)
        stopped = registration.stop()
        clock.advance(4.9)
        self.assertNoResult(stopped)
        clock.advance(0.1)
        self.successResultOf(stopped)

    def test_stop_when_not_registered(self) -> None:
        registration, protocol, _, _ = make_registration()
        waiting = registration.when_registered()
        self.successResultOf(registration.stop())
        self.failureResultOf(waiting, RegistrationFailed)
        registration.connection_made(protocol)
        self.assertEqual(protocol.sent, [])

    def test_when_registered_after_success(self) -> None:
        registration, protocol, _, _ = make_registration()
        registration.connection_made(protocol)
        protocol.answer(200)
        self.assertIs(self.successResultOf(registration.when_registered()), protocol)


class NatProtocol(FakeProtocol):
    """Contact built from the public address once learned, like SessionInitiationProtocol."""

    @property
    def contact(self) -> str:
        address = self.public_address or NetworkAddress.parse("10.0.0.5:40000")
        return f"<sip:alice@{address};transport=tls;ob>"

    @contact.setter
    def contact(self, value: str) -> None:
        pass


class PublicAddressTests(SynchronousTestCase):
    def test_contact_moves_to_public_address(self) -> None:
        """RFC 3581 / RFC 5626 §5: once the public address is known, re-register with it,
        removing the private Contact in the same REGISTER (RFC 3261 §10.2.1 expires=0)."""
        registration, _, _, _ = make_registration()
        protocol = NatProtocol()
        registration.connection_made(protocol)
        old = protocol.last.headers["Contact"]
        self.assertIn("10.0.0.5:40000", old)
        protocol.answer(200)
        self.assertEqual(len(protocol.sent), 2)
        contacts = protocol.last.headers["Contact"]
        self.assertTrue(contacts.startswith("<sip:alice@192.0.2.7:41234;transport=tls;ob>"))
        self.assertTrue(contacts.endswith(old + ";expires=0"))
        protocol.answer(200)
        self.assertEqual(len(protocol.sent), 2)
        self.assertIn("192.0.2.7:41234", registration.registered_contact)
        stopped = registration.stop()
        self.assertEqual(protocol.last.headers["Contact"], registration.registered_contact)
        protocol.answer(200)
        self.successResultOf(stopped)


class OnRegisteredTests(SynchronousTestCase):
    """The reference's ``on_registered()`` hook of the protocol (issue 13)."""

    def test_called_once_per_flow_registration_not_on_refresh(self) -> None:
        """Each accepted REGISTER of a new flow calls it; refreshes (RFC 3261 §10.2.4) do not."""
        registration, protocol, clock, _ = make_registration()
        calls: list[str] = []
        protocol.on_registered = lambda: calls.append(  # type: ignore[attr-defined]
            str(registration.state.value)
        )
        registration.connection_made(protocol)
        self.assertEqual(calls, [])
        protocol.answer(200, ("Expires", "100"))
        self.assertEqual(calls, ["registered"])  # the hook sees the registered state
        clock.advance(refresh_delay(100))
        protocol.answer(200, ("Expires", "100"))
        self.assertEqual(calls, ["registered"])
        registration.connection_lost(protocol)
        second = FakeProtocol()
        second.on_registered = lambda: calls.append("second")  # type: ignore[attr-defined]
        registration.connection_made(second)
        second.answer(200, ("Expires", "100"))
        self.assertEqual(calls, ["registered", "second"])

    def test_an_exception_in_the_hook_is_logged_and_registration_carries_on(self) -> None:
        registration, protocol, _, events = make_registration()

        def broken() -> None:
            raise RuntimeError("application bug")

        protocol.on_registered = broken  # type: ignore[attr-defined]
        waiter = registration.when_registered()
        registration.connection_made(protocol)
        protocol.answer(200, ("Expires", "100"))
        self.assertIs(self.successResultOf(waiter), protocol)
        self.assertTrue(registration.registered)
        [failure] = [e["log_failure"] for e in events if "log_failure" in e]
        self.assertIsInstance(failure.value, RuntimeError)
