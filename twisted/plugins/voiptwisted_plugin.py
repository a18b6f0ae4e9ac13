"""Registers ``twistd voip`` (options and service live in ``voiptwisted.tap``)."""

from twisted.application.service import ServiceMaker

voip = ServiceMaker(
    "voiptwisted", "voiptwisted.tap", "SIP telephony: register, answer and place calls.", "voip"
)
