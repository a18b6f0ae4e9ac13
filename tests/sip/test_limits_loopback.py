"""Issue 14 findings 5 and 12 on 127.0.0.1: TLS handshakes that never finish are dropped.

Before, a ``sips:`` UA connected to a plain-TCP "registrar" sat in "TLS handshake"
forever, and so did a listener's connection from a client that never started TLS
(these tests then hit trial's timeout).  Short handshake timeouts keep them fast;
they wait on the connection-lost event, never on a clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol as tw_protocol
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.integration.certs import get_pki
from voiptwisted.sip.connect import _ReportingProxy, client_endpoint
from voiptwisted.sip.limits import ConnectionLimits
from voiptwisted.sip.protocol import SessionInitiationProtocol, SIPServerFactory
from voiptwisted.sip.uri import SipURI

SHORT = ConnectionLimits(handshake_timeout=0.3)


class Silent(tw_protocol.Protocol):
    """Accepts a connection and never says anything (a plain-TCP "registrar")."""


class Watched(SessionInitiationProtocol):
    """A SIP flow whose end fires ``lost``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        self.lost.callback(None)


class Quiet(tw_protocol.Protocol):
    """A client that connects over plain TCP and never starts TLS."""

    def __init__(self) -> None:
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost.callback(None)


class HandshakeLoopbackTests(TestCase):
    timeout = 20

    async def test_outbound_sips_to_plain_tcp_gives_up(self) -> None:
        """Finding 12: sips: against a plain-TCP server: the flow ends, it does not hang."""
        port = reactor.listenTCP(
            0, tw_protocol.Factory.forProtocol(Silent), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        aor = SipURI.parse(f"sips:alice@127.0.0.1:{port.getHost().port}")
        endpoint = client_endpoint(reactor, aor, ca_file=get_pki().ca_cert)
        flow = Watched(aor=aor, limits=SHORT, reactor=reactor)
        await endpoint.connect(tw_protocol.Factory.forProtocol(lambda: flow))
        await flow.lost
        self.assertFalse(flow.is_connected)

    async def test_inbound_client_that_never_starts_tls_is_dropped(self) -> None:
        """Finding 5: a connection to a TLS listener that never handshakes is closed."""
        pair = get_pki().server
        with open(pair.cert, "rb") as c, open(pair.key, "rb") as k:
            cert = ssl.PrivateCertificate.loadPEM(c.read() + k.read())
        factory = SIPServerFactory(
            limits=SHORT, aor="sip:bob@127.0.0.1", protocol_class=Watched, reactor=reactor
        )
        port = reactor.listenSSL(0, factory, cert.options(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = Quiet()
        connected: Deferred[Any] = tw_protocol.ClientCreator(reactor, lambda: client).connectTCP(
            "127.0.0.1", port.getHost().port
        )
        await connected
        await client.lost
        self.assertEqual(factory.budget.open, 0)


class ReportingProxyTests(SynchronousTestCase):
    def test_handshake_notice_reaches_a_protocol_behind_clientservice(self) -> None:
        """ClientService's proxy declares no IHandshakeListener: the notice (which stops
        the handshake timeout) is passed on by name, or every TLS flow would be cut."""
        seen: list[str] = []

        class Proxy:
            def handshakeCompleted(self) -> None:
                seen.append("done")

        _ReportingProxy(Proxy(), endpoint=None).handshakeCompleted()  # type: ignore[arg-type]
        self.assertEqual(seen, ["done"])
