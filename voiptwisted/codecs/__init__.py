"""Audio codecs behind one registry: G.711 (PCMA, PCMU), G.722 and Opus.

:mod:`.registry` describes each codec and makes its per-call coders; the coders
live in one module per codec (:mod:`.g711`, :mod:`.g722`, :mod:`.opus`).  Importing
this package loads the registry only: numpy, PyAV and libopus come with the first
coder a call asks for.
"""

from voiptwisted.codecs.registry import (
    CODECS,
    DEFAULT_CODECS,
    Codec,
    Decoder,
    Encoder,
    lookup,
    register_codec,
    usable,
)

__all__ = [
    "CODECS",
    "DEFAULT_CODECS",
    "Codec",
    "Decoder",
    "Encoder",
    "lookup",
    "register_codec",
    "usable",
]
