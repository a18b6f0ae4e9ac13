"""SDP (RFC 4566): session descriptions, their field types and SDES ``a=crypto`` (RFC 4568).

`SessionDescription.parse` turns an SDP body into objects and ``bytes()`` turns
them back into the same lines; every parse error is an `SDPParseError` (for
``a=crypto``, its subclass `SDESError`).  Offer/answer is in :mod:`.negotiation`,
fed the codecs as data: nothing in this package imports a codec, numpy, an SRTP
library or Twisted.
"""

from voiptwisted.sdp.description import MAX_MEDIA, MAX_SIZE, SessionDescription
from voiptwisted.sdp.types import (
    DIRECTIONS,
    SUITES,
    Attribute,
    Bandwidth,
    ConnectionData,
    CryptoAttribute,
    CryptoKeyParam,
    CryptoSuite,
    MediaDescription,
    Origin,
    PayloadTypeSpec,
    RTPPayloadFormat,
    SDESError,
    SDPParseError,
    StaticPayloadType,
    Timing,
    redact_sdp,
)

__all__ = [
    "DIRECTIONS",
    "MAX_MEDIA",
    "MAX_SIZE",
    "SUITES",
    "Attribute",
    "Bandwidth",
    "ConnectionData",
    "CryptoAttribute",
    "CryptoKeyParam",
    "CryptoSuite",
    "MediaDescription",
    "Origin",
    "PayloadTypeSpec",
    "RTPPayloadFormat",
    "SDESError",
    "SDPParseError",
    "SessionDescription",
    "StaticPayloadType",
    "Timing",
    "redact_sdp",
]
