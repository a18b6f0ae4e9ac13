"""SDP (RFC 4566): session descriptions and their field types.

`SessionDescription.parse` turns an SDP body into objects and ``bytes()`` turns
them back into the same lines; every parse error is an `SDPParseError`.
"""

from voiptwisted.sdp.description import MAX_MEDIA, MAX_SIZE, SessionDescription
from voiptwisted.sdp.types import (
    DIRECTIONS,
    Attribute,
    Bandwidth,
    ConnectionData,
    CryptoAttribute,
    CryptoKeyParam,
    MediaDescription,
    Origin,
    PayloadTypeSpec,
    RTPPayloadFormat,
    SDPParseError,
    StaticPayloadType,
    Timing,
)

__all__ = [
    "DIRECTIONS",
    "MAX_MEDIA",
    "MAX_SIZE",
    "Attribute",
    "Bandwidth",
    "ConnectionData",
    "CryptoAttribute",
    "CryptoKeyParam",
    "MediaDescription",
    "Origin",
    "PayloadTypeSpec",
    "RTPPayloadFormat",
    "SDPParseError",
    "SessionDescription",
    "StaticPayloadType",
    "Timing",
]
