"""Run voiptwisted from a .tac file: ``twistd -ny examples/voip.tac``.

Configure with environment variables: VOIP_AOR (e.g. sips:alice@carrier.example; unset
for the embedded echo service on TLS 127.0.0.1:5061), SIP_PASSWORD, VOIP_CA_FILE,
VOIP_LISTEN (a server endpoint for direct calls, e.g. ``tls:5071``), VOIP_STATE_DIR.
"""

import os
import pathlib

from twisted.application import service
from twisted.internet import reactor

from voiptwisted.service import ServiceConfig, VoIPService
from voiptwisted.sip.uri import SipURI

aor = os.environ.get("VOIP_AOR")
config = ServiceConfig(
    aor=SipURI.parse(aor) if aor else None,
    password=os.environ.get("SIP_PASSWORD"),
    ca_file=os.environ.get("VOIP_CA_FILE"),
    listen=os.environ.get("VOIP_LISTEN"),
    srtp="required" if aor and aor.startswith("sips:") else "optional",
)
if os.environ.get("VOIP_STATE_DIR"):
    config.state_dir = pathlib.Path(os.environ["VOIP_STATE_DIR"])

application = service.Application("voiptwisted")
VoIPService(config, reactor).setServiceParent(application)
