"""Click-to-call: a twisted.web page that places a call through a registered VoIPService.

``POST /call?to=sip:bob@example.com`` dials the target with a PlaybackSession (or echo)
and answers with the call's outcome.  Run it with::

    VOIP_AOR=sips:alice@carrier.example SIP_PASSWORD=... python examples/click_to_call.py 8080

Optional: VOIP_CA_FILE (extra CA certificates), VOIP_STATE_DIR (instance id location).
The page listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import endpoints, reactor
from twisted.web import resource, server

from voiptwisted.service import ServiceConfig, VoIPService
from voiptwisted.sip.dialog import CallFailed
from voiptwisted.sip.uri import InvalidURI, SipURI


class CallResource(resource.Resource):
    """POST ?to=URI places a call; the response says whether it was answered."""

    isLeaf = True

    def __init__(self, voip: VoIPService) -> None:
        super().__init__()
        self.voip = voip

    def render_POST(self, request: Any) -> Any:
        target = request.args.get(b"to", [b""])[0].decode("utf-8", "replace")
        try:
            uri = SipURI.parse(target)
        except InvalidURI as e:
            request.setResponseCode(400)
            return f"bad target: {e}\n".encode()
        d = self.voip.place_call(uri)

        def answered(dialog: Any) -> None:
            request.write(f"answered: {dialog.call_id}\n".encode())
            request.finish()

        def failed(failure: Any) -> None:
            request.setResponseCode(502)
            why = failure.value if failure.check(CallFailed) else failure.getErrorMessage()
            request.write(f"not answered: {why}\n".encode())
            request.finish()

        d.addCallbacks(answered, failed)
        return server.NOT_DONE_YET


def make_services(voip: VoIPService, web_endpoint: str) -> MultiService:
    """The VoIP UA and the web page in one service tree."""
    root = MultiService()
    voip.setServiceParent(root)
    site = server.Site(CallResource(voip))
    from twisted.application.internet import StreamServerEndpointService

    StreamServerEndpointService(
        endpoints.serverFromString(reactor, web_endpoint), site
    ).setServiceParent(root)
    return root


def main(port: str) -> None:
    config = ServiceConfig(
        aor=SipURI.parse(os.environ["VOIP_AOR"]),
        password=os.environ.get("SIP_PASSWORD"),
        ca_file=os.environ.get("VOIP_CA_FILE"),
    )
    if os.environ.get("VOIP_STATE_DIR"):
        config.state_dir = pathlib.Path(os.environ["VOIP_STATE_DIR"])
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    root = make_services(VoIPService(config, reactor), f"tcp:{port}:interface=127.0.0.1")
    root.startService()
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "8080")
