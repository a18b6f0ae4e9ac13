"""RTP, RTCP, RFC 4733 telephone-events and STUN.

Pure packet codecs live in :mod:`.packet`, :mod:`.dtmf` and :mod:`.stun`;
the UDP adapter ``RealtimeTransportProtocol`` lives in :mod:`.protocol`.  Every
name here is loaded on first use (PEP 562): ``import voiptwisted.rtp.packet``
loads neither the STUN client (Twisted's Deferreds) nor the UDP adapter.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "DTMFEvent": "voiptwisted.rtp.dtmf",
    "DTMFParseError": "voiptwisted.rtp.dtmf",
    "DTMFReceiver": "voiptwisted.rtp.dtmf",
    "DTMFSender": "voiptwisted.rtp.dtmf",
    "Goodbye": "voiptwisted.rtp.packet",
    "RTCPPacket": "voiptwisted.rtp.packet",
    "RTPPacket": "voiptwisted.rtp.packet",
    "RTPParseError": "voiptwisted.rtp.packet",
    "RTPStats": "voiptwisted.rtp.packet",
    "ReceiverReport": "voiptwisted.rtp.packet",
    "ReportBlock": "voiptwisted.rtp.packet",
    "SenderReport": "voiptwisted.rtp.packet",
    "SourceDescription": "voiptwisted.rtp.packet",
    "build_rtcp": "voiptwisted.rtp.packet",
    "parse_rtcp": "voiptwisted.rtp.packet",
    "MappedAddress": "voiptwisted.rtp.stun",
    "StunClient": "voiptwisted.rtp.stun",
    "StunError": "voiptwisted.rtp.stun",
    "StunMessage": "voiptwisted.rtp.stun",
    "StunParseError": "voiptwisted.rtp.stun",
    "StunProtocol": "voiptwisted.rtp.stun",
    "StunTimeout": "voiptwisted.rtp.stun",
    "binding_request": "voiptwisted.rtp.stun",
    "is_stun": "voiptwisted.rtp.stun",
    "RealtimeTransportProtocol": "voiptwisted.rtp.protocol",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """PEP 562: import the module that defines *name* when it is first used."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
