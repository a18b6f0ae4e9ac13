"""A twisted.web site and a VoIPService in one application: ``twistd -ny examples/web_calls.tac``.

``POST /call?to=URI`` places a call (echo) and answers ``answered: <Call-ID>`` once the
callee picks up, or 502 with the SIP status; ``&seconds=N`` hangs the call up N seconds
after the answer.  An HTTP client that goes away before the answer cancels the call
(CANCEL once it rings, RFC 3261 §9.1).  ``GET /`` says whether the VoIP service runs,
or why it could not start: a SIP listener that cannot bind fails only the VoIP service
(one error line), the site keeps serving.

With ``VOIP_AOR`` the calls go through that registrar (``SIP_PASSWORD``, ``VOIP_CA_FILE``
for a private CA); without it they go straight to the target, located with RFC 3263 and
over TLS verified against the target's host (``VOIP_CA_FILE`` trusted too).
``VOIP_LISTEN``: SIP listeners for calls to us (comma separated, e.g. ``tcp:5070``; without
``VOIP_AOR`` the default is TLS on 127.0.0.1:5061).  ``VOIP_WEB``: the site's endpoint
(default ``tcp:8080:interface=127.0.0.1``).  ``VOIP_SRTP``: required, optional or off (by
default required for sips: URIs, else optional).  ``VOIP_STATE_DIR``: where the instance id and
the self-signed certificate live.  SIGTERM hangs every call up (BYE), un-registers and
closes the flows before the process exits.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from twisted.application import service, strports
from twisted.internet import defer, reactor
from twisted.web import resource, server

from voiptwisted.service import ServiceConfig, VoIPService
from voiptwisted.sip.dialog import CallFailed
from voiptwisted.sip.uri import InvalidURI, SipURI


class Status(resource.Resource):
    """GET /: the VoIP service's state, as its own API reports it."""

    def __init__(self, voip: VoIPService) -> None:
        super().__init__()
        self.voip = voip

    def render_GET(self, request: Any) -> bytes:
        if self.voip.start_failure is not None:
            request.setResponseCode(503)
            return f"voip: {self.voip.start_failure}\n".encode()
        running = bool(self.voip.running)
        return f"voip: running={running} calls={self.voip.active_call_count()}\n".encode()


class Call(resource.Resource):
    """POST /call?to=URI[&seconds=N]: place a call; cancelled if the client goes away."""

    isLeaf = True

    def __init__(self, voip: VoIPService) -> None:
        super().__init__()
        self.voip = voip

    def render_POST(self, request: Any) -> Any:
        target = request.args.get(b"to", [b""])[0].decode("utf-8", "replace")
        try:
            uri = SipURI.parse(target)
            seconds = float(request.args.get(b"seconds", [b"0"])[0])
        except (InvalidURI, ValueError) as e:
            request.setResponseCode(400)
            return f"bad request: {e}\n".encode()
        placing = self.voip.place_call(uri)
        # The client hung up on us before the answer: cancel the call (Deferred.cancel).
        request.notifyFinish().addErrback(lambda _: placing.cancel())

        def answered(dialog: Any) -> None:
            if seconds > 0:
                self.voip.reactor.callLater(seconds, dialog.bye)
            request.write(f"answered: {dialog.call_id}\n".encode())
            request.finish()

        def failed(failure: Any) -> None:
            if failure.check(defer.CancelledError):
                return  # the client is gone: nobody to answer
            request.setResponseCode(502)
            why = failure.value if failure.check(CallFailed) else failure.getErrorMessage()
            request.write(f"not answered: {why}\n".encode())
            request.finish()

        placing.addCallbacks(answered, failed)
        return server.NOT_DONE_YET


def make_application() -> service.Application:
    aor = os.environ.get("VOIP_AOR")
    listen = [d for d in os.environ.get("VOIP_LISTEN", "").split(",") if d]
    config = ServiceConfig(
        aor=SipURI.parse(aor) if aor else None,
        password=os.environ.get("SIP_PASSWORD"),
        ca_file=os.environ.get("VOIP_CA_FILE"),
        listen=listen or None,
        srtp=os.environ.get("VOIP_SRTP") or None,
    )
    if os.environ.get("VOIP_STATE_DIR"):
        config.state_dir = pathlib.Path(os.environ["VOIP_STATE_DIR"])
    application = service.Application("web-calls")
    voip = VoIPService(config, reactor)
    voip.setServiceParent(application)
    root = Status(voip)
    root.putChild(b"", root)
    root.putChild(b"call", Call(voip))
    site = server.Site(root)
    web = os.environ.get("VOIP_WEB", "tcp:8080:interface=127.0.0.1")
    strports.service(web, site).setServiceParent(application)
    return application


application = make_application()
