"""The public API as a library user drives it, on real loopback sockets, with pytest-twisted.

Plain pytest functions under ``pytest_twisted.ensureDeferred``: pytest-twisted runs the
reactor (in a greenlet) and waits on each test's Deferred.  ``trial`` collects only
``TestCase`` classes, so under ``python3 -m twisted.trial tests`` this module is imported
(both packages are test dependencies) and adds no test; pytest, which CI runs, runs them.

- The reference's ``SessionInitiationProtocol.run(fn, aor, dialog_class, *,
  no_verify_tls=...)`` against Kamailio over TLS: ``on_registered`` then *fn*, then the
  registered protocol; ``when_disconnected()`` once the client is stopped.
- Two of our UAs over TCP on 127.0.0.1: a listener built with ``SIPServerFactory`` and a
  caller with ``SIPClientFactory``, each given the reactor once; a call dialled, answered,
  checked through the reference's ``Dialog`` names, and hung up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import endpoints, reactor

from tests.integration.peers import Kamailio
from tests.integration.support import eventually
from voiptwisted.media.call import MediaConfig
from voiptwisted.media.session import EchoSession
from voiptwisted.sip.dialog import Dialog
from voiptwisted.sip.protocol import SessionInitiationProtocol, SIPClientFactory, SIPServerFactory
from voiptwisted.sip.uri import SipURI

TIMEOUT = 20


@pytest.fixture
def kamailio(tmp_path: Any) -> Iterator[Kamailio]:
    """A Kamailio of this test's own on 127.0.0.1 (started and stopped by PID)."""
    registrar = Kamailio(str(tmp_path))
    try:
        registrar.start()
        yield registrar
    finally:
        registrar.cleanup()


@pytest_twisted.ensureDeferred
async def test_reference_run_against_kamailio(kamailio: Kamailio) -> None:
    """Issue 13: the reference's call, as written, registers and fires with the protocol;
    the subclass's ``on_registered`` runs, then *fn*; ``no_verify_tls`` connects to a
    registrar whose CA we were not given."""
    events: list[Any] = []

    class MySession(SessionInitiationProtocol):
        def on_registered(self) -> None:
            events.append(("on_registered", self))

    host, port = kamailio.address("tls")
    aor = SipURI.parse(f"sip:alice:{kamailio.users['alice']}@{host}:{port}")
    protocol = await MySession.run(
        lambda: events.append("fn"), aor, Dialog, no_verify_tls=True, reactor=reactor,
        keepalive=None,
    ).addTimeout(TIMEOUT, reactor)
    try:
        assert isinstance(protocol, MySession)
        assert protocol.is_secure
        assert protocol.service.registration.registered
        assert events == [("on_registered", protocol), "fn"]
        disconnected = protocol.when_disconnected()
        assert not disconnected.called
    finally:
        await protocol.service.stopService()
    await disconnected.addTimeout(TIMEOUT, reactor)
    assert not protocol.is_connected


class Answering(Dialog):
    """Answers every call with echo and remembers it."""

    calls: list[Dialog] = []

    def call_received(self) -> None:
        type(self).calls.append(self)
        self.answer(session_class=EchoSession)


@pytest_twisted.ensureDeferred
async def test_two_of_our_uas_call_each_other_over_loopback() -> None:
    """Our caller dials our listener over TCP on 127.0.0.1 with nothing but the public API
    and one reactor given to each factory; the dialog's reference names agree on both
    sides; BYE ends both; the caller's flow reports its end."""
    Answering.calls = []

    def media(base: int) -> MediaConfig:
        return MediaConfig(port_range=(base, base + 200), srtp="off")

    listener = SIPServerFactory(
        reactor=reactor, aor="sip:bob@127.0.0.1;transport=tcp", dialog_class=Answering,
        media_config=media(37000),
    )
    port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        listener
    )
    try:
        address = port.getHost()
        caller = await endpoints.TCP4ClientEndpoint(
            reactor, "127.0.0.1", address.port
        ).connect(
            SIPClientFactory(
                reactor=reactor, aor="sip:alice@127.0.0.1;transport=tcp",
                media_config=media(37400),
            )
        )
        dialog = Dialog(sip=caller)
        await dialog.dial(
            f"sip:bob@127.0.0.1:{address.port};transport=tcp", session_class=EchoSession
        ).addTimeout(TIMEOUT, reactor)
        [callee] = Answering.calls
        assert dialog.call_id == callee.call_id
        assert dialog.from_header == callee.to_header
        assert dialog.to_header == callee.from_header
        assert dialog.headers["Call-ID"] == callee.headers["Call-ID"]
        assert dialog.created <= callee.created
        ended = callee.when_ended()
        await dialog.bye().addTimeout(TIMEOUT, reactor)
        await ended.addTimeout(TIMEOUT, reactor)
        await eventually(lambda: caller.dialog_count == 0, TIMEOUT, "the call to be forgotten")
        disconnected = caller.when_disconnected()
        caller.transport.loseConnection()
        await disconnected.addTimeout(TIMEOUT, reactor)
    finally:
        await port.stopListening()
