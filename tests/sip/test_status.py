"""Tests for voiptwisted.sip.status: SIPStatus and SIPMethod against the reference API."""

from __future__ import annotations

import enum

from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.sip.status import SIPMethod, SIPStatus

#: Every member of the reference's SIPStatus, in its order: (name, code, phrase).
REFERENCE_STATUSES = [
    ("TRYING", 100, "Trying"),
    ("RINGING", 180, "Ringing"),
    ("CALL_IS_BEING_FORWARDED", 181, "Call Is Being Forwarded"),
    ("QUEUED", 182, "Queued"),
    ("SESSION_PROGRESS", 183, "Session Progress"),
    ("OK", 200, "OK"),
    ("MULTIPLE_CHOICES", 300, "Multiple Choices"),
    ("MOVED_PERMANENTLY", 301, "Moved Permanently"),
    ("MOVED_TEMPORARILY", 302, "Moved Temporarily"),
    ("USE_PROXY", 305, "Use Proxy"),
    ("ALTERNATIVE_SERVICE", 380, "Alternative Service"),
    ("BAD_REQUEST", 400, "Bad Request"),
    ("UNAUTHORIZED", 401, "Unauthorized"),
    ("PAYMENT_REQUIRED", 402, "Payment Required"),
    ("FORBIDDEN", 403, "Forbidden"),
    ("NOT_FOUND", 404, "Not Found"),
    ("METHOD_NOT_ALLOWED", 405, "Method Not Allowed"),
    ("NOT_ACCEPTABLE", 406, "Not Acceptable"),
    ("PROXY_AUTHENTICATION_REQUIRED", 407, "Proxy Authentication Required"),
    ("REQUEST_TIMEOUT", 408, "Request Timeout"),
    ("GONE", 410, "Gone"),
    ("REQUEST_ENTITY_TOO_LARGE", 413, "Request Entity Too Large"),
    ("REQUEST_URI_TOO_LONG", 414, "Request-URI Too Long"),
    ("UNSUPPORTED_MEDIA_TYPE", 415, "Unsupported Media Type"),
    ("UNSUPPORTED_URI_SCHEME", 416, "Unsupported URI Scheme"),
    ("BAD_EXTENSION", 420, "Bad Extension"),
    ("EXTENSION_REQUIRED", 421, "Extension Required"),
    ("INTERVAL_TOO_BRIEF", 423, "Interval Too Brief"),
    ("TEMPORARILY_UNAVAILABLE", 480, "Temporarily Unavailable"),
    ("CALL_TRANSACTION_DOES_NOT_EXIST", 481, "Call/Transaction Does Not Exist"),
    ("LOOP_DETECTED", 482, "Loop Detected"),
    ("TOO_MANY_HOPS", 483, "Too Many Hops"),
    ("ADDRESS_INCOMPLETE", 484, "Address Incomplete"),
    ("AMBIGUOUS", 485, "Ambiguous"),
    ("BUSY_HERE", 486, "Busy Here"),
    ("REQUEST_TERMINATED", 487, "Request Terminated"),
    ("NOT_ACCEPTABLE_HERE", 488, "Not Acceptable Here"),
    ("REQUEST_PENDING", 491, "Request Pending"),
    ("UNDECIPHERABLE", 493, "Undecipherable"),
    ("SERVER_INTERNAL_ERROR", 500, "Server Internal Error"),
    ("NOT_IMPLEMENTED", 501, "Not Implemented"),
    ("BAD_GATEWAY", 502, "Bad Gateway"),
    ("SERVICE_UNAVAILABLE", 503, "Service Unavailable"),
    ("SERVER_TIME_OUT", 504, "Server Time-out"),
    ("VERSION_NOT_SUPPORTED", 505, "Version Not Supported"),
    ("MESSAGE_TOO_LARGE", 513, "Message Too Large"),
    ("BUSY_EVERYWHERE", 600, "Busy Everywhere"),
    ("DECLINE", 603, "Decline"),
    ("DOES_NOT_EXIST_ANYWHERE", 604, "Does Not Exist Anywhere"),
    ("NOT_ACCEPTABLE_ANYWHERE", 606, "Not Acceptable"),
]


class SIPStatusTests(SynchronousTestCase):
    def test_every_reference_member_and_phrase(self) -> None:
        """RFC 3261 §21 codes with the reference's names and reason phrases."""
        for name, code, phrase in REFERENCE_STATUSES:
            member = SIPStatus[name]
            self.assertEqual(member, code, name)
            self.assertEqual(member.value, code, name)
            self.assertEqual(member.phrase, phrase, name)
            self.assertIs(SIPStatus(code), member)

    def test_no_members_missing_or_extra(self) -> None:
        self.assertEqual(
            [(m.name, int(m), m.phrase) for m in SIPStatus],
            [(name, code, phrase) for name, code, phrase in REFERENCE_STATUSES],
        )

    def test_is_int(self) -> None:
        self.assertIsInstance(SIPStatus.OK, int)
        self.assertTrue(issubclass(SIPStatus, enum.IntEnum))
        self.assertEqual(SIPStatus.BUSY_HERE + 1, 487)
        self.assertEqual(f"{int(SIPStatus.OK)} {SIPStatus.OK.phrase}", "200 OK")

    def test_phrase_for_known_codes(self) -> None:
        for _, code, phrase in REFERENCE_STATUSES:
            self.assertEqual(SIPStatus.phrase_for(code), phrase)

    def test_phrase_for_unknown_code_uses_class_x00(self) -> None:
        """RFC 3261 §21: an unrecognised code is treated as the x00 code of its class."""
        cases = {
            199: "Trying",
            150: "Trying",
            299: "OK",
            202: "OK",
            399: "Multiple Choices",
            499: "Bad Request",
            422: "Bad Request",
            599: "Server Internal Error",
            699: "Busy Everywhere",
            607: "Busy Everywhere",
        }
        for code, phrase in cases.items():
            self.assertEqual(SIPStatus.phrase_for(code), phrase, code)

    def test_phrase_for_out_of_range(self) -> None:
        for code in (0, 99, 700, 1000, -1):
            self.assertEqual(SIPStatus.phrase_for(code), "Unknown", code)

    def test_unknown_code_not_a_member(self) -> None:
        self.assertRaises(ValueError, SIPStatus, 299)


class SIPMethodTests(SynchronousTestCase):
    def test_order_is_allow_order(self) -> None:
        """Members iterate in the order used for the Allow header."""
        self.assertEqual(
            list(SIPMethod),
            [
                "INVITE",
                "ACK",
                "BYE",
                "CANCEL",
                "OPTIONS",
                "REGISTER",
                "PRACK",
                "SUBSCRIBE",
                "NOTIFY",
                "PUBLISH",
                "INFO",
                "REFER",
                "MESSAGE",
                "UPDATE",
            ],
        )

    def test_reference_allow_header(self) -> None:
        """The reference builds Allow as ",".join(m for m in SIPMethod if m in allowed)."""
        allowed = {
            SIPMethod.BYE,
            SIPMethod.OPTIONS,
            SIPMethod.INVITE,
            SIPMethod.CANCEL,
            SIPMethod.ACK,
        }
        self.assertEqual(
            ",".join(m for m in SIPMethod if m in allowed), "INVITE,ACK,BYE,CANCEL,OPTIONS"
        )

    def test_rfc3261_core_methods(self) -> None:
        """RFC 3261 §7.1: the six core methods exist."""
        for name in ("REGISTER", "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"):
            self.assertEqual(SIPMethod[name], name)

    def test_str_enum(self) -> None:
        self.assertIsInstance(SIPMethod.INVITE, str)
        self.assertEqual(SIPMethod("BYE"), SIPMethod.BYE)
        self.assertEqual(str(SIPMethod.INVITE), "INVITE")
        self.assertEqual(
            f"{SIPMethod.INVITE} sip:bob@example.com SIP/2.0", "INVITE sip:bob@example.com SIP/2.0"
        )
        self.assertRaises(ValueError, SIPMethod, "invite")
