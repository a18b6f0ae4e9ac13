"""Media: jitter buffer, the shared 20 ms pacer, sessions and calls.

The G.711 functions of :mod:`voiptwisted.codecs.g711` are re-exported here.  They,
the session and the call classes are loaded on first access (PEP 562):
importing the package (as ``voiptwisted.media.call`` does when a service
starts) loads neither numpy nor the call machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

from .jitter import JitterBuffer
from .pacer import Pacer, default_pacer

__all__ = [
    "CallMedia",
    "EchoSession",
    "JitterBuffer",
    "MediaConfig",
    "Pacer",
    "PlaybackSession",
    "RecordingSession",
    "Session",
    "alaw_decode",
    "alaw_encode",
    "default_pacer",
    "ulaw_decode",
    "ulaw_encode",
]

_LAZY = {
    "alaw_decode": "voiptwisted.codecs.g711",
    "alaw_encode": "voiptwisted.codecs.g711",
    "ulaw_decode": "voiptwisted.codecs.g711",
    "ulaw_encode": "voiptwisted.codecs.g711",
    "Session": "voiptwisted.media.session",
    "EchoSession": "voiptwisted.media.session",
    "PlaybackSession": "voiptwisted.media.session",
    "RecordingSession": "voiptwisted.media.session",
    "CallMedia": "voiptwisted.media.call",
    "MediaConfig": "voiptwisted.media.call",
}


def __getattr__(name: str) -> Any:
    """PEP 562: import codec/session/call modules only when their names are used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
