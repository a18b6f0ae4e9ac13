"""Audio codecs behind one registry: G.711 today (G.722 and Opus are to join).

:mod:`.registry` describes each codec and makes its per-call coders; the coders
live in one module per codec (:mod:`.g711`).  Importing this package loads the
registry only: numpy comes with the first coder a call asks for.
"""

from voiptwisted.codecs.registry import CODECS, Codec, Decoder, Encoder, lookup, register_codec

__all__ = ["CODECS", "Codec", "Decoder", "Encoder", "lookup", "register_codec"]
