"""Tests for voiptwisted.sip.connect: endpoints, TLS identity checks, reconnection, run()."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import protocol as tw_protocol
from twisted.internet import reactor, ssl, task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.integration.certs import get_pki
from voiptwisted.sip.connect import (
    SIPClientService,
    TLSVerificationFailed,
    build_client,
    client_endpoint,
    client_service,
    describe_tls_failure,
    load_instance_id,
    retry_policy,
    run,
    tls_server_name,
)
from voiptwisted.sip.framing import PING, PONG, StreamFramer
from voiptwisted.sip.keepalive import FlowKeepalive
from voiptwisted.sip.locate import ServerLocator
from voiptwisted.sip.message import Message, Response
from voiptwisted.sip.registration import Registration, RegistrationFailed
from voiptwisted.sip.uri import SipURI

INSTANCE = "6e1c9a3e-2b8f-4c1d-9f00-0123456789ab"


def capture_logs(test) -> list[dict]:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def texts(events: list[dict], level: LogLevel) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_level") == level]


class ClosingTransport(StringTransport):
    """A StringTransport whose loseConnection tells the protocol, like a real one."""

    outermost = None

    def loseConnection(self) -> None:
        if not self.disconnecting:
            super().loseConnection()
            self.outermost.connectionLost(Failure(ConnectionDone()))


class FakeTargetEndpoint:
    """Connects at once (or fails) and records the target it was made for."""

    def __init__(self, host: str, port: int, outcome: object = None) -> None:
        self.host, self.port, self.outcome = host, port, outcome

    def connect(self, factory):
        if self.outcome is not None:
            return fail(self.outcome)
        proto = factory.buildProtocol(None)
        transport = ClosingTransport()
        transport.outermost = proto
        proto.makeConnection(transport)
        return succeed(proto)


def locate(aor: SipURI) -> list[tuple[str, int]]:
    """Where the default locator connects for ``aor`` when DNS has no SRV records."""

    class NoRecords:
        def lookupService(self, name, timeout=None):
            return succeed(([], [], []))

    result: list = []
    ServerLocator(NoRecords())(aor).addCallback(result.append)
    return result[0]


def no_dns(uri: SipURI) -> list[tuple[str, int]]:
    """A resolver seam that connects to the AOR host at its port, without DNS."""
    return [(str(uri.host), uri.port)]


def with_fake_targets(endpoint, refuse=()):
    attempts: list[tuple[str, int]] = []

    def target(host: str, port: int) -> FakeTargetEndpoint:
        attempts.append((host, port))
        outcome = ConnectionRefusedError() if (host, port) in refuse else None
        return FakeTargetEndpoint(host, port, outcome)

    endpoint.target_endpoint = target
    return attempts


class TransportSelectionTests(SynchronousTestCase):
    def test_sip_without_transport_is_tls(self) -> None:
        """Issue 3 / reference: a sip: AOR without transport uses TLS."""
        endpoint = client_endpoint(task.Clock(), SipURI.parse("sip:alice@example.com"))
        self.assertTrue(endpoint.is_tls)

    def test_sips_is_tls_on_5061(self) -> None:
        """RFC 3261 §19.1.2: sips defaults to port 5061 and always TLS."""
        aor = SipURI.parse("sips:alice@example.com;transport=tcp")
        self.assertTrue(client_endpoint(task.Clock(), aor).is_tls)
        self.assertEqual(locate(aor), [("example.com", 5061)])

    def test_transport_tcp_is_plain(self) -> None:
        aor = SipURI.parse("sip:alice@example.com;transport=tcp")
        endpoint = client_endpoint(task.Clock(), aor)
        self.assertFalse(endpoint.is_tls)
        self.assertEqual(locate(aor), [("example.com", 5060)])

    def test_udp_refused(self) -> None:
        aor = SipURI.parse("sip:alice@example.com;transport=udp")
        self.assertRaises(ValueError, client_endpoint, task.Clock(), aor)

    def test_ipv6_literal(self) -> None:
        aor = SipURI.parse("sips:alice@[::1]")
        self.assertEqual(locate(aor), [("::1", 5061)])
        self.assertEqual(tls_server_name(aor), "::1")
        endpoint = client_endpoint(task.Clock(), aor)
        attempts = with_fake_targets(endpoint)
        self.successResultOf(
            endpoint.connect(tw_protocol.Factory.forProtocol(tw_protocol.Protocol))
        )
        self.assertEqual(attempts, [("::1", 5061)])

    def test_maddr(self) -> None:
        """RFC 3261 §19.1.1: maddr says where to connect; a hostname maddr is the name
        verified, an IP maddr keeps the AOR domain as the verified name (RFC 5922 §7.2)."""
        by_ip = SipURI.parse("sips:alice@example.com;maddr=192.0.2.1")
        self.assertEqual(locate(by_ip), [("192.0.2.1", 5061)])
        self.assertEqual(tls_server_name(by_ip), "example.com")
        by_name = SipURI.parse("sips:alice@example.com;maddr=proxy.example.net")
        self.assertEqual(tls_server_name(by_name), "proxy.example.net")

    def test_resolver_seam_fails_over(self) -> None:
        """RFC 3263 §4.3: try the resolved targets in order until one answers."""
        aor = SipURI.parse("sips:alice@example.com")
        endpoint = client_endpoint(
            task.Clock(), aor, resolver=lambda uri: [("192.0.2.1", 5061), ("192.0.2.2", 5062)]
        )
        attempts = with_fake_targets(endpoint, refuse={("192.0.2.1", 5061)})
        proto = self.successResultOf(
            endpoint.connect(tw_protocol.Factory.forProtocol(tw_protocol.Protocol))
        )
        self.assertIsInstance(proto, tw_protocol.Protocol)
        self.assertEqual(attempts, [("192.0.2.1", 5061), ("192.0.2.2", 5062)])

    def test_all_targets_refused(self) -> None:
        aor = SipURI.parse("sips:alice@example.com")
        endpoint = client_endpoint(task.Clock(), aor, resolver=no_dns)
        with_fake_targets(endpoint, refuse={("example.com", 5061)})
        d = endpoint.connect(tw_protocol.Factory.forProtocol(tw_protocol.Protocol))
        self.failureResultOf(d, ConnectionRefusedError)

    def test_insecure_warns_on_every_connect(self) -> None:
        """verify=False is an explicit opt-out: a WARNING on every connect."""
        events = capture_logs(self)
        endpoint = client_endpoint(
            task.Clock(), SipURI.parse("sips:a@example.com"), verify=False, resolver=no_dns
        )
        with_fake_targets(endpoint)
        factory = tw_protocol.Factory.forProtocol(tw_protocol.Protocol)
        for _ in range(3):
            self.successResultOf(endpoint.connect(factory))
        warnings = [t for t in texts(events, LogLevel.warn) if "verification is DISABLED" in t]
        self.assertEqual(len(warnings), 3)

    def test_verified_endpoint_does_not_warn(self) -> None:
        events = capture_logs(self)
        aor = SipURI.parse("sips:a@example.com")
        endpoint = client_endpoint(task.Clock(), aor, resolver=no_dns)
        with_fake_targets(endpoint)
        self.successResultOf(
            endpoint.connect(tw_protocol.Factory.forProtocol(tw_protocol.Protocol))
        )
        self.assertEqual(texts(events, LogLevel.warn), [])


class DescribeFailureTests(SynchronousTestCase):
    def test_not_a_tls_problem(self) -> None:
        self.assertIsNone(describe_tls_failure(Failure(ConnectionDone())))

    def test_hostname_mismatch_names_the_host(self) -> None:
        from service_identity import VerificationError
        from service_identity.hazmat import DNS_ID, DNSMismatch

        error = VerificationError(errors=[DNSMismatch(mismatched_id=DNS_ID("sip.example.com"))])
        text = describe_tls_failure(Failure(error))
        self.assertEqual(
            text, "hostname mismatch: the certificate is not valid for 'sip.example.com'"
        )

    def test_other_handshake_errors_are_named(self) -> None:
        from OpenSSL import SSL

        error = SSL.Error([("SSL routines", "", "tlsv1 alert protocol version")])
        self.assertEqual(
            describe_tls_failure(Failure(error)),
            "TLS handshake failed: tlsv1 alert protocol version",
        )


class PolicyAndStateTests(SynchronousTestCase):
    def test_backoff_values(self) -> None:
        """Reconnect 1 s doubling to 60 s (issue 3), plus jitter."""
        policy = retry_policy(jitter=lambda: 0.0)
        self.assertEqual([policy(n) for n in range(1, 9)], [1, 2, 4, 8, 16, 32, 60, 60])
        jittered = retry_policy(jitter=lambda: 0.5)
        self.assertEqual(jittered(1), 1.5)

    def test_client_service_retries_with_backoff(self) -> None:
        clock = task.Clock()
        attempts: list[float] = []

        class Refusing:
            def connect(self, factory):
                attempts.append(clock.seconds())
                return fail(ConnectionRefusedError())

        service = client_service(
            Refusing(),
            tw_protocol.Factory.forProtocol(tw_protocol.Protocol),
            reactor=clock,
            policy=retry_policy(jitter=lambda: 0.0),
        )
        service.startService()
        for _ in range(100):
            clock.advance(0.5)
        self.assertEqual(attempts[:5], [0, 1, 3, 7, 15])
        service.stopService()

    def test_instance_id_is_stable(self) -> None:
        """RFC 5626 §4.1: the instance URN stays the same across restarts."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        first = load_instance_id(directory)
        self.assertRegex(first, r"^urn:uuid:[0-9a-f-]{36}$")
        self.assertEqual(load_instance_id(directory), first)
        with open(os.path.join(directory, "instance-id"), "w") as handle:
            handle.write("garbage")
        replaced = load_instance_id(directory)
        self.assertNotEqual(replaced, first)
        self.assertEqual(load_instance_id(directory), replaced)


class HookProtocol(tw_protocol.Protocol):
    """A stand-in SIP protocol that calls the hooks like SessionInitiationProtocol."""

    registration = None
    keepalive = None

    def __init__(self) -> None:
        self.sent: list = []
        self.contact = "<sip:alice@127.0.0.1:5555;transport=tls;ob>"
        self.public_address = None

    def connectionMade(self) -> None:
        for hook in (self.registration, self.keepalive):
            if hook is not None:
                hook.connection_made(self)

    def connectionLost(self, reason=None) -> None:
        for hook in (self.keepalive, self.registration):
            if hook is not None:
                hook.connection_lost(self, reason)

    def send_request(self, request):
        d: Deferred = Deferred()
        self.sent.append((request, d))
        return d


def answer(proto: HookProtocol, code: int, *headers) -> None:
    request, d = proto.sent[-1]
    base = [
        ("Via", "SIP/2.0/TLS 127.0.0.1:5555;branch=z9hG4bKx"),
        ("From", request.headers["From"]),
        ("To", request.headers["To"]),
        ("Call-ID", request.headers["Call-ID"]),
        ("CSeq", request.headers["CSeq"]),
    ]
    d.callback(Response(code, headers=base + list(headers)))


class ServiceTests(SynchronousTestCase):
    def make(self, refuse: bool = False):
        clock = task.Clock()
        aor = SipURI.parse("sips:alice@example.com")
        endpoint = client_endpoint(clock, aor, resolver=no_dns)
        with_fake_targets(endpoint, refuse={("example.com", 5061)} if refuse else ())
        registration = Registration(aor, password="pw", reactor=clock, instance_id=INSTANCE)
        keepalive = FlowKeepalive(reactor=clock, interval=30)
        service = SIPClientService(clock, endpoint, HookProtocol, registration, keepalive)
        return service, clock

    def test_build_client_shares_one_credentials(self) -> None:
        """Issue 14: the registration and every flow share one Credentials, so the realm the
        registrar's challenge binds is the one calls answer (plus auth_realms)."""
        aor = SipURI.parse("sips:alice@example.com")
        service = build_client(
            aor,
            password="pw",
            reactor=task.Clock(),
            resolver=no_dns,
            keepalive=None,
            auth_realms=["proxy.example"],
        )
        first = service.factory.buildProtocol(None)
        second = service.factory.buildProtocol(None)
        credentials = service.registration.credentials
        self.assertIs(first.credentials, credentials)
        self.assertIs(second.credentials, credentials)
        self.assertTrue(credentials.allows("proxy.example"))
        self.assertFalse(credentials.allows("example.com"))
        self.assertIsNone(
            build_client(aor, reactor=task.Clock(), resolver=no_dns).registration.credentials
        )

    def test_flows_that_never_register_back_off(self) -> None:
        """A flow that connects but dies before registering (refused certificate, registrar
        closing on us) grows the backoff: ClientService alone resets it on every connect and
        would retry every second forever (issue 6: no tight loops)."""
        service, _clock = self.make()
        service._base_policy = retry_policy(jitter=lambda: 0.0)
        delays = [service._retry_delay(1) for _ in range(8)]
        self.assertEqual(delays, [2, 4, 8, 16, 32, 60, 60, 60])
        service.registration.success_count += 1
        self.assertEqual(service._retry_delay(1), 1)
        self.assertEqual(service._retry_delay(2), 2)

    def test_start_fires_with_registered_protocol(self) -> None:
        """The library entry point fires once registered (issue 3 item 8)."""
        service, clock = self.make()
        d = service.start()
        proto = service.registration.protocol
        self.assertIsInstance(proto, HookProtocol)
        self.assertIs(proto.service, service)
        self.assertNoResult(d)
        answer(proto, 200)
        self.assertIs(self.successResultOf(d), proto)
        self.assertTrue(service.keepalive.running)
        stopped = service.stopService()
        self.assertEqual(proto.sent[-1][0].headers["Expires"], "0")
        answer(proto, 200)
        self.assertNoResult(stopped)
        clock.advance(0)
        self.successResultOf(stopped)
        self.assertFalse(service.keepalive.running)

    def test_start_fails_when_refused(self) -> None:
        service, clock = self.make()
        d = service.start()
        answer(service.registration.protocol, 403)
        clock.advance(0)
        self.failureResultOf(d, RegistrationFailed)
        self.assertFalse(service.running)
        clock.advance(3600)

    def test_start_fails_when_first_connect_fails(self) -> None:
        service, clock = self.make(refuse=True)
        d = service.start()
        clock.advance(0)
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertFalse(service.running)

    def test_reconnect_registers_again(self) -> None:
        """After a lost flow, ClientService reconnects and the new flow re-registers."""
        service, clock = self.make()
        d = service.start()
        first = service.registration.protocol
        answer(first, 200)
        self.successResultOf(d)
        first.transport.outermost.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(service.registration.protocol)
        clock.advance(61)
        second = service.registration.protocol
        self.assertIsInstance(second, HookProtocol)
        self.assertIsNot(second, first)
        self.assertEqual(second.sent[0][0].headers["Call-ID"], first.sent[0][0].headers["Call-ID"])


class Registrar(tw_protocol.Protocol):
    """A loopback TCP registrar: 200 OK to every REGISTER, granting what was asked."""

    def connectionMade(self) -> None:
        self.framer = StreamFramer()

    def dataReceived(self, data: bytes) -> None:
        for frame in self.framer.feed(data):
            if frame in (PING, PONG):
                continue
            request = Message.parse(frame)
            expires = request.headers.get("Expires", "3600")
            headers = [("Contact", f"{request.headers['Contact']};expires={expires}")]
            self.transport.write(bytes(Response.from_request(request, 200, headers=headers)))


class RunTests(TestCase):
    timeout = 20

    async def test_run_passes_protocol_kwargs(self) -> None:
        """run(protocol_kwargs=...) reaches the SessionInitiationProtocol, as build_client."""
        port = reactor.listenTCP(
            0, tw_protocol.Factory.forProtocol(Registrar), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        aor = SipURI.parse(f"sip:alice@127.0.0.1:{port.getHost().port};transport=tcp")
        protocol = await run(
            aor,
            reactor=reactor,
            instance_id=INSTANCE,
            keepalive=None,
            protocol_kwargs={
                "max_calls": 3,
                "trace": True,
                "outbound_proxy": "<sip:proxy.example.com;lr>",
            },
        )
        try:
            self.assertEqual(
                (protocol.max_calls, protocol.trace, protocol.outbound_proxy),
                (3, True, "<sip:proxy.example.com;lr>"),
            )
            self.assertTrue(protocol.service.registration.registered)
        finally:
            await protocol.service.stopService()


class TLSServerProtocol(tw_protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class TLSClientProtocol(tw_protocol.Protocol):
    def __init__(self) -> None:
        self.lost: Deferred = Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(b"hello")

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received == b"hello":
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        self.lost.callback(reason.value)


class RealTLSTests(TestCase):
    """Handshakes over 127.0.0.1 with the test PKI (RFC 5922 §7.2 server identity)."""

    timeout = 20

    def listen(self, pair) -> int:
        with open(pair.cert, "rb") as c, open(pair.key, "rb") as k:
            cert = ssl.PrivateCertificate.loadPEM(c.read() + k.read())
        port = reactor.listenSSL(
            0,
            tw_protocol.Factory.forProtocol(TLSServerProtocol),
            cert.options(),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def connect(self, pair, *, verify=True, host="127.0.0.1", ca=True):
        pki = get_pki()
        port = self.listen(pair)
        aor = SipURI.parse(f"sips:alice@{host}:{port}")
        endpoint = client_endpoint(
            reactor, aor, ca_file=pki.ca_cert if ca else None, verify=verify
        )
        seen: list[TLSVerificationFailed] = []
        endpoint.tls_failure_observers.append(seen.append)
        client = await endpoint.connect(tw_protocol.Factory.forProtocol(TLSClientProtocol))
        reason = await client.lost
        return client, reason, seen

    async def test_good_certificate(self) -> None:
        events = capture_logs(self)
        client, _, seen = await self.connect(get_pki().server)
        self.assertEqual(client.received, b"hello")
        self.assertEqual(seen, [])
        self.assertEqual(texts(events, LogLevel.error), [])

    async def test_unknown_ca_refused(self) -> None:
        """A certificate from an unknown CA is refused, with one line naming the problem."""
        events = capture_logs(self)
        client, _, seen = await self.connect(get_pki().unknown_ca)
        self.assertEqual(client.received, b"")
        self.assertEqual(len(seen), 1)
        errors = texts(events, LogLevel.error)
        self.assertEqual(len(errors), 1)
        self.assertIn("unknown CA", errors[0])
        self.assertIn("unable to get local issuer certificate", errors[0])

    async def test_wrong_hostname_refused(self) -> None:
        """RFC 5922 §7.2: a certificate for another name is refused (hostname mismatch)."""
        events = capture_logs(self)
        client, _, seen = await self.connect(get_pki().wrong_host)
        self.assertEqual(client.received, b"")
        errors = texts(events, LogLevel.error)
        self.assertEqual(len(errors), 1)
        self.assertIn("hostname mismatch", errors[0])
        self.assertIn("127.0.0.1", errors[0])
        self.assertEqual(len(seen), 1)

    async def test_private_ca_needed(self) -> None:
        """Without the private CA file the test CA is unknown (platform trust only)."""
        events = capture_logs(self)
        client, _, _ = await self.connect(get_pki().server, ca=False)
        self.assertEqual(client.received, b"")
        self.assertIn("unknown CA", " ".join(texts(events, LogLevel.error)))

    async def test_refused_certificate_is_one_line_for_the_whole_ua(self) -> None:
        """Issues 3/6: a real UA (protocol + registration + reconnecting service) whose
        registrar has an unknown-CA certificate logs ONE line per attempt (the endpoint's
        "TLS to ... refused: unknown CA"), not also "registration ... failed: Error: [('SSL
        routines' ...", nor "Starting/Stopping factory" noise."""
        pki = get_pki()
        port = self.listen(pki.unknown_ca)
        client = build_client(
            SipURI.parse(f"sips:alice@127.0.0.1:{port}"),
            password="pw",
            ca_file=pki.ca_cert,
            reactor=reactor,
            instance_id=INSTANCE,
            keepalive=None,
        )
        refused: Deferred = Deferred()
        client.endpoint.tls_failure_observers.append(refused.callback)
        events = capture_logs(self)
        client.startService()
        self.addCleanup(client.stopService)
        await refused
        await task.deferLater(reactor, 0.05, lambda: None)  # the flow finishes closing
        lines = [
            formatEvent(e)
            for e in events
            if e.get("log_level") in (LogLevel.warn, LogLevel.error)
            or "factory" in e.get("log_format", "")
        ]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("refused: unknown CA", lines[0])

    async def test_sip_flow_reported_up_only_after_verified_handshake(self) -> None:
        """The real UA logs "up (TLS)" once the certificate is verified, never on a refusal."""
        pki = get_pki()
        lines: dict[str, list[str]] = {}
        for name, pair in (("good", pki.server), ("refused", pki.unknown_ca)):
            client = build_client(
                SipURI.parse(f"sips:alice@127.0.0.1:{self.listen(pair)}"),
                password="pw", ca_file=pki.ca_cert, reactor=reactor,
                instance_id=INSTANCE, keepalive=None,
            )  # fmt: skip
            outcome: Deferred = Deferred()
            client.endpoint.tls_failure_observers.append(outcome.callback)
            events = capture_logs(self)
            client.startService()
            self.addCleanup(client.stopService)
            for _ in range(200):  # at most 10 s
                text = [formatEvent(e) for e in events]
                if outcome.called or any("up (TLS)" in line for line in text):
                    break
                await task.deferLater(reactor, 0.05, lambda: None)
            await client.stopService()
            lines[name] = [formatEvent(e) for e in events if "SIP flow" in formatEvent(e)]
        self.assertIn("SIP flow to 127.0.0.1: TLS handshake", lines["good"])
        self.assertIn("SIP flow to 127.0.0.1 up (TLS)", lines["good"])
        self.assertIn("SIP flow to 127.0.0.1: TLS handshake", lines["refused"])
        self.assertFalse([line for line in lines["refused"] if " up" in line], lines["refused"])

    async def test_insecure_accepts_anything(self) -> None:
        events = capture_logs(self)
        client, _, seen = await self.connect(get_pki().unknown_ca, verify=False)
        self.assertEqual(client.received, b"hello")
        self.assertEqual(seen, [])
        self.assertEqual(len(texts(events, LogLevel.warn)), 1)


class SipsMediaPolicyTests(SynchronousTestCase):
    def test_sips_aor_refuses_explicit_insecure_media_config(self) -> None:
        """Issue 14 finding 11: run()/build_client with a sips: AOR and a MediaConfig that
        explicitly allows plain RTP is a ValueError; left out, the calls are SRTP only."""
        from voiptwisted.media.call import MediaConfig

        aor = SipURI.parse("sips:alice@127.0.0.1:5061")
        for policy in ("off", "optional"):
            with self.assertRaises(ValueError) as raised:
                build_client(aor, reactor=task.Clock(), keepalive=None,
                             media_config=MediaConfig(srtp=policy))
            self.assertIn("sips: requires SRTP", str(raised.exception))
        build_client(aor, reactor=task.Clock(), keepalive=None, media_config=MediaConfig())
        build_client(aor, reactor=task.Clock(), keepalive=None,
                     media_config=MediaConfig(srtp="required"))


class CoreLikeProtocol(HookProtocol):
    """Loses its flow the way SessionInitiationProtocol does: transport gone, pending
    requests failed (by the core), then the hooks told."""

    def connectionLost(self, reason=None) -> None:
        self.transport = None
        for _request, d in self.sent:
            if not d.called:
                d.errback(Failure(ConnectionDone()))
        super().connectionLost(reason)


class FailoverTests(SynchronousTestCase):
    """Issue 10 item 6: a failing server moves the flow to the next RFC 3263 target."""

    TARGETS = [("192.0.2.1", 5061), ("192.0.2.2", 5061)]

    def make(self, targets=None, protocol_class=HookProtocol):
        clock = task.Clock()
        aor = SipURI.parse("sips:alice@example.com")
        endpoint = client_endpoint(
            clock, aor, resolver=lambda uri: list(targets or self.TARGETS)
        )
        attempts = with_fake_targets(endpoint)
        registration = Registration(aor, password="pw", reactor=clock, instance_id=INSTANCE)
        service = SIPClientService(clock, endpoint, protocol_class, registration, None)
        service.startService()
        self.addCleanup(service.stopService)
        return service, clock, attempts

    def reconnect(self, service, clock):
        clock.advance(61)
        return service.registration.protocol

    def test_503_moves_to_the_next_target(self) -> None:
        """RFC 3263 §4.3: a 503 to REGISTER closes the flow and the next one goes to the next
        target, where we register; without Retry-After the first server is only demoted for
        that one connect."""
        service, clock, attempts = self.make()
        first = service.registration.protocol
        answer(first, 503)
        self.assertTrue(first.transport.disconnecting)
        second = self.reconnect(service, clock)
        self.assertIsNot(second, first)
        self.assertEqual(attempts, self.TARGETS)
        answer(second, 200)
        self.assertTrue(service.registration.registered)
        second.transport.outermost.connectionLost(Failure(ConnectionDone()))
        self.reconnect(service, clock)
        self.assertEqual(attempts[-1], self.TARGETS[0])

    def test_408_moves_to_the_next_target(self) -> None:
        """RFC 3263 §4.3: 408 (the server did not answer in time) is a server failure too."""
        service, clock, attempts = self.make()
        answer(service.registration.protocol, 408)
        self.reconnect(service, clock)
        self.assertEqual(attempts, self.TARGETS)

    def test_transport_failure_moves_to_the_next_target(self) -> None:
        """RFC 3263 §4.3: the flow dying under our REGISTER sends the next flow elsewhere."""
        service, clock, attempts = self.make(protocol_class=CoreLikeProtocol)
        first = service.registration.protocol
        first.transport.outermost.connectionLost(Failure(ConnectionDone()))
        self.reconnect(service, clock)
        self.assertEqual(attempts, self.TARGETS)

    def test_retry_after_target_skipped_until_it_expires(self) -> None:
        """RFC 3261 §21.5.4 / RFC 3263 §4.3: a 503 with Retry-After keeps that server out of
        the target list until the time has passed; then it is first again."""
        service, clock, attempts = self.make()
        answer(service.registration.protocol, 503, ("Retry-After", "300"))
        for _ in range(3):
            protocol = self.reconnect(service, clock)
            protocol.transport.outermost.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(attempts, [self.TARGETS[0]] + [self.TARGETS[1]] * 3)
        clock.advance(300)
        self.assertEqual(attempts[-1], self.TARGETS[0])

    def test_single_target_keeps_its_flow(self) -> None:
        """With one server there is nowhere to move: a 503 is retried on the same flow."""
        service, clock, attempts = self.make(targets=[("192.0.2.1", 5061)])
        first = service.registration.protocol
        answer(first, 503)
        self.assertFalse(first.transport.disconnecting)
        clock.advance(5)
        self.assertEqual(len(first.sent), 2)
        self.assertEqual(attempts, [("192.0.2.1", 5061)])

    def test_flow_with_calls_kept(self) -> None:
        """A flow still carrying calls is not dropped to fail over (it would cut them)."""
        service, _clock, _attempts = self.make()
        first = service.registration.protocol
        first.dialog_count = 1
        answer(first, 503)
        self.assertFalse(first.transport.disconnecting)
