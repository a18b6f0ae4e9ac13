"""SIP (RFC 3261) for Twisted: URIs, messages, transactions, dialogs and the protocol.

Names are imported lazily (PEP 562) so ``import voiptwisted.sip`` stays cheap
and the syntax layer never pulls in the reactor.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "SIPStatus": "voiptwisted.sip.status",
    "SIPMethod": "voiptwisted.sip.status",
    "SipURI": "voiptwisted.sip.uri",
    "CallerID": "voiptwisted.sip.uri",
    "NetworkAddress": "voiptwisted.sip.uri",
    "Headers": "voiptwisted.sip.headers",
    "Message": "voiptwisted.sip.message",
    "Request": "voiptwisted.sip.message",
    "Response": "voiptwisted.sip.message",
    "SIPParseError": "voiptwisted.sip.message",
    "Dialog": "voiptwisted.sip.dialog",
    "CallFailed": "voiptwisted.sip.dialog",
    "SessionInitiationProtocol": "voiptwisted.sip.protocol",
    "SIPClientFactory": "voiptwisted.sip.protocol",
    "SIPDatagramProtocol": "voiptwisted.sip.datagram",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'voiptwisted.sip' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
