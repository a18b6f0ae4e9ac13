"""voiptwisted: a Twisted-native SIP telephony library and ``twistd`` plugin.

Layers (lower never import higher): syntax (``voiptwisted.sip.message``,
``voiptwisted.sdp``, ``voiptwisted.rtp.packet``), state (transactions, dialogs,
registration, media sessions), Twisted adapters (protocols) and the service.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
