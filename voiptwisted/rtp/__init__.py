"""RTP, RTCP, RFC 4733 telephone-events and STUN.

Pure packet codecs live in :mod:`.packet`, :mod:`.dtmf` and :mod:`.stun`;
the UDP adapter ``RealtimeTransportProtocol`` (in :mod:`.protocol`) is
imported lazily so the packet layer never depends on it.
"""

from __future__ import annotations

import importlib
from typing import Any

from .dtmf import DTMFEvent, DTMFParseError, DTMFReceiver, DTMFSender
from .packet import (
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RTCPPacket,
    RTPPacket,
    RTPParseError,
    RTPStats,
    SenderReport,
    SourceDescription,
    build_rtcp,
    parse_rtcp,
)
from .stun import (
    MappedAddress,
    StunClient,
    StunError,
    StunMessage,
    StunParseError,
    StunProtocol,
    StunTimeout,
    binding_request,
    is_stun,
)

__all__ = [
    "DTMFEvent",
    "DTMFParseError",
    "DTMFReceiver",
    "DTMFSender",
    "Goodbye",
    "MappedAddress",
    "RTCPPacket",
    "RTPPacket",
    "RTPParseError",
    "RTPStats",
    "RealtimeTransportProtocol",
    "ReceiverReport",
    "ReportBlock",
    "SenderReport",
    "SourceDescription",
    "StunClient",
    "StunError",
    "StunMessage",
    "StunParseError",
    "StunProtocol",
    "StunTimeout",
    "binding_request",
    "build_rtcp",
    "is_stun",
    "parse_rtcp",
]

_LAZY = {"RealtimeTransportProtocol": "voiptwisted.rtp.protocol"}


def __getattr__(name: str) -> Any:
    """PEP 562: load the Twisted UDP adapter only when asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
