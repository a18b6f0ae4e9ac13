"""Tests for voiptwisted.rtp.srtp: SDES a=crypto (RFC 4568) and SRTP via pylibsrtp (RFC 3711)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from twisted.trial import unittest

from voiptwisted.rtp.srtp import SRTPContext
from voiptwisted.sdp import SUITES, CryptoAttribute, SDESError, redact_sdp

# RFC 3711 Appendix B.3 (key derivation) inputs and outputs.
B3_MASTER_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
B3_MASTER_SALT = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
B3_CIPHER_KEY = bytes.fromhex("C61E7A93744F39EE10734AFE3FF7A087")
B3_CIPHER_SALT = bytes.fromhex("30CBBC08863D8C85D49DB34A9AE1")
B3_AUTH_KEY = bytes.fromhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")


def aes_cm_keystream(key: bytes, salt: bytes, ssrc: int, index: int, length: int) -> bytes:
    """Independent AES Counter Mode keystream per RFC 3711 §4.1.1 (the test oracle)."""
    iv = int.from_bytes(salt, "big") << 16
    iv ^= (ssrc << 64) ^ (index << 16)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return encryptor.update(bytes(length))


def rtp_packet(seq: int, ssrc: int = 0x11223344, payload: bytes = b"\xd5" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 8, seq, seq * 160, ssrc) + payload


def inline(master: bytes, suite: str = "AES_CM_128_HMAC_SHA1_80", tag: int = 1) -> str:
    return f"{tag} {suite} inline:{base64.b64encode(master).decode()}"


class RFC3711VectorTests(unittest.SynchronousTestCase):
    def test_b2_keystream_oracle(self) -> None:
        """RFC 3711 Appendix B.2: the test's AES-CM oracle yields the RFC keystream."""
        key = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
        salt = bytes.fromhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD")
        stream = aes_cm_keystream(key, salt, 0, 0, 48)
        self.assertEqual(
            stream.hex().upper(),
            "E03EAD0935C95E80E166B16DD92B4EB4"
            "D23513162B02D0F72A43A2FE4A5F97AB"
            "41E95B3BB0A2E8DD477901E4FCA894C0",
        )

    def test_b3_key_derivation_through_sdes(self) -> None:
        """RFC 3711 Appendix B.3 / §4.3: a=crypto master key derives the RFC session keys.

        The B.3 master key and salt go through our ``inline:`` parsing into
        libsrtp; the protected packet must equal one built independently with the
        RFC's derived cipher key, cipher salt and auth key (AES-CM + HMAC-SHA1-80).
        """
        attr = CryptoAttribute.parse_supported(inline(B3_MASTER_KEY + B3_MASTER_SALT))
        ctx = SRTPContext(attr, attr)
        packet = rtp_packet(seq=0, ssrc=0, payload=bytes(range(64)))
        protected = ctx.protect(packet)
        header, payload = packet[:12], packet[12:]
        stream = aes_cm_keystream(B3_CIPHER_KEY, B3_CIPHER_SALT, 0, 0, len(payload))
        cipher = bytes(a ^ b for a, b in zip(payload, stream, strict=True))
        tag = hmac.new(B3_AUTH_KEY, header + cipher + b"\x00\x00\x00\x00", hashlib.sha1)
        self.assertEqual(protected, header + cipher + tag.digest()[:10])


class CryptoAttributeTests(unittest.SynchronousTestCase):
    def test_parse_round_trip(self) -> None:
        """RFC 4568 §9.1: tag, crypto-suite and inline key||salt survive a round trip."""
        master = bytes(range(30))
        attr = CryptoAttribute.parse_supported(inline(master, tag=7) + "|2^20")
        self.assertEqual(attr.tag, 7)
        self.assertEqual(attr.suite, "AES_CM_128_HMAC_SHA1_80")
        self.assertEqual(attr.master, master)
        self.assertEqual(attr.lifetime, 2**20)
        self.assertEqual(CryptoAttribute.parse_supported(attr.to_sdp()), attr)

    def test_suites(self) -> None:
        """RFC 4568 §6.2 / RFC 7714: the 80, 32 and GCM suites with their key lengths."""
        for name, length in (
            ("AES_CM_128_HMAC_SHA1_80", 30),
            ("AES_CM_128_HMAC_SHA1_32", 30),
            ("AEAD_AES_128_GCM", 28),
        ):
            attr = CryptoAttribute.generate(suite=name)
            self.assertEqual(len(attr.master), length)
            self.assertEqual(CryptoAttribute.parse_supported(attr.to_sdp()).master, attr.master)

    def test_fresh_keys(self) -> None:
        """RFC 4568 §6.1: every generated key is new."""
        keys = {CryptoAttribute.generate().master for _ in range(50)}
        self.assertEqual(len(keys), 50)

    def test_mki_refused(self) -> None:
        """RFC 4568 §6.1: an MKI is refused with a clear error, not misused."""
        with self.assertRaises(SDESError) as ctx:
            CryptoAttribute.parse_supported(inline(bytes(30)) + "|2^20|1:4")
        self.assertIn("MKI", str(ctx.exception))

    def test_bad_lines(self) -> None:
        """Malformed or unsupported a=crypto values raise SDESError only, without the key."""
        key = base64.b64encode(bytes(30)).decode()
        bad = [
            "",
            "1",
            "1 AES_CM_128_HMAC_SHA1_80",
            f"x AES_CM_128_HMAC_SHA1_80 inline:{key}",
            f"1 F8_128_HMAC_SHA1_80 inline:{key}",
            f"1 AES_CM_128_HMAC_SHA1_80 uri:{key}",
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!",
            "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(29)).decode(),
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^49",
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{key}|0",
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|2^20",
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{key};inline:{key}",
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{key} UNENCRYPTED_SRTP",
            "1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 2000,
        ]
        for value in bad:
            with self.assertRaises(SDESError, msg=value) as ctx:
                CryptoAttribute.parse_supported(value)
            self.assertNotIn(key, str(ctx.exception))

    def test_window_size_hint_accepted(self) -> None:
        """RFC 4568 §6.3.7: WSH is only a hint and does not make the line unusable."""
        attr = CryptoAttribute.parse_supported(inline(bytes(30)) + " WSH=64")
        self.assertEqual(attr.tag, 1)

    def test_repr_hides_key(self) -> None:
        """Keys never appear in repr (issue 5: keys never in logs)."""
        attr = CryptoAttribute.generate()
        context = SRTPContext(attr, attr)
        text = repr(attr) + repr(context) + repr(context.protect)
        text += repr(context.unprotect_or_raise)
        self.assertNotIn(base64.b64encode(attr.master).decode(), text)
        self.assertNotIn(attr.master.hex(), text)

    def test_redact_sdp(self) -> None:
        """The inline: value is replaced in logged SDP; the rest of the body is kept."""
        attr = CryptoAttribute.generate()
        body = f"v=0\r\na=crypto:{attr.to_sdp()}|2^31\r\na=sendrecv\r\n".encode()
        redacted = redact_sdp(body)
        self.assertNotIn(base64.b64encode(attr.master), redacted)
        self.assertIn(b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<redacted>|2^31", redacted)
        self.assertIn(b"a=sendrecv", redacted)


class SuiteProfileTests(unittest.SynchronousTestCase):
    def test_profiles_are_libsrtp_constants(self) -> None:
        """RFC 5764 §4.1.2 / RFC 7714 §14.2 profile numbers, as pylibsrtp names them.

        SUITES hard-codes them so that pylibsrtp loads with the first call only.
        """
        import pylibsrtp

        policy = pylibsrtp.Policy
        self.assertEqual(SUITES["AES_CM_128_HMAC_SHA1_80"].profile,
                         policy.SRTP_PROFILE_AES128_CM_SHA1_80)
        self.assertEqual(SUITES["AES_CM_128_HMAC_SHA1_32"].profile,
                         policy.SRTP_PROFILE_AES128_CM_SHA1_32)
        self.assertEqual(SUITES["AEAD_AES_128_GCM"].profile, policy.SRTP_PROFILE_AEAD_AES_128_GCM)


class SRTPContextTests(unittest.SynchronousTestCase):
    def pair(self, suite: str = "AES_CM_128_HMAC_SHA1_80") -> tuple[SRTPContext, SRTPContext]:
        a = CryptoAttribute.generate(suite=suite)
        b = CryptoAttribute.generate(suite=suite)
        return SRTPContext(a, b), SRTPContext(b, a)

    def test_round_trip_all_suites(self) -> None:
        """RFC 3711 §3.3: protect then unprotect gives the packet back, for every suite."""
        for name in SUITES:
            alice, bob = self.pair(name)
            for seq in range(5):
                packet = rtp_packet(seq)
                protected = alice.protect(packet)
                self.assertNotEqual(protected[12:172], packet[12:])
                self.assertEqual(bob.unprotect(protected), packet)
            report = struct.pack("!BBHI", 0x80, 201, 1, 0x11223344)
            self.assertEqual(alice.unprotect_rtcp(bob.protect_rtcp(report)), report)

    def wrapped_past_65535(self) -> tuple[SRTPContext, SRTPContext, CryptoAttribute, Any]:
        """Alice sends sequence numbers 65530 .. 65535, 0 .. 5 (her rollover counter is now 1)."""
        a = CryptoAttribute.generate()
        b = CryptoAttribute.generate()
        alice, bob = SRTPContext(a, b), SRTPContext(b, a)
        for seq in [*range(65530, 65536), *range(6)]:
            self.assertEqual(bob.unprotect(alice.protect(rtp_packet(seq))), rtp_packet(seq))
        return alice, bob, a, b

    def test_rekeyed_unchanged_is_same_context(self) -> None:
        _, bob, a, b = self.wrapped_past_65535()
        self.assertIs(bob.rekeyed(b, a), bob)

    def test_rekeyed_keeps_direction_whose_key_is_unchanged(self) -> None:
        """RFC 4568 §7.1.4 / RFC 3711 §3.3.1: Bob re-keys his side only; the context for
        Alice's unchanged key carries on, so her packets after the sequence wrap (index
        65536 + 6) still decrypt: a restarted context would assume rollover counter 0."""
        alice, bob, a, _ = self.wrapped_past_65535()
        bob.auth_failures = 2
        new_b = CryptoAttribute.generate()
        rekeyed = bob.rekeyed(new_b, a)
        self.assertIsNot(rekeyed, bob)
        self.assertEqual(rekeyed.unprotect(alice.protect(rtp_packet(6))), rtp_packet(6))
        restarted = SRTPContext(new_b, a)
        self.assertIsNone(restarted.unprotect(alice.protect(rtp_packet(7))))
        # Bob's new key protects from now on; the old context is untouched.
        self.assertEqual(SRTPContext(a, new_b).unprotect(rekeyed.protect(rtp_packet(1))),
                         rtp_packet(1))
        self.assertEqual(rekeyed.auth_failures, 2)

    def test_rekeyed_new_peer_key_new_receive_context(self) -> None:
        alice, bob, _a, b = self.wrapped_past_65535()
        new_a = CryptoAttribute.generate()
        rekeyed = bob.rekeyed(b, new_a)
        fresh_alice = SRTPContext(new_a, b)
        self.assertEqual(rekeyed.unprotect(fresh_alice.protect(rtp_packet(1))), rtp_packet(1))
        self.assertIsNone(rekeyed.unprotect(alice.protect(rtp_packet(7))))  # old key: refused
        with self.assertRaises(SDESError):
            bob.rekeyed(b, CryptoAttribute.generate(suite="AES_CM_128_HMAC_SHA1_32"))

    def test_tampered_dropped(self) -> None:
        """RFC 3711 §3.3 step 5: a packet failing authentication is dropped and counted."""
        alice, bob = self.pair()
        protected = bytearray(alice.protect(rtp_packet(1)))
        protected[20] ^= 0x01
        self.assertIsNone(bob.unprotect(bytes(protected)))
        self.assertEqual(bob.auth_failures, 1)
        self.assertIsNone(bob.unprotect(b"\x80\x08"))
        self.assertIsNone(bob.unprotect_rtcp(b"\x80\xc9\x00\x01garbagegarbage"))
        self.assertEqual(bob.auth_failures, 3)

    def test_replay_dropped(self) -> None:
        """RFC 3711 §3.3.2: a replayed packet is dropped and counted."""
        alice, bob = self.pair()
        protected = alice.protect(rtp_packet(9))
        self.assertIsNotNone(bob.unprotect(protected))
        self.assertIsNone(bob.unprotect(protected))
        self.assertEqual(bob.replays, 1)
        self.assertEqual(bob.auth_failures, 0)

    def test_oversized_dropped(self) -> None:
        """A datagram too long for libsrtp's buffer cannot be authenticated: None, counted."""
        _, bob = self.pair()
        self.assertIsNone(bob.unprotect(b"\x80\x08" + bytes(2000)))
        self.assertIsNone(bob.unprotect_rtcp(b"\x80\xc8" + bytes(2000)))
        self.assertEqual((bob.auth_failures, bob.replays), (2, 0))

    def test_unprotect_or_raise(self) -> None:
        """The media path's unprotect raises one of ``errors`` and counts nothing itself;
        count_failure tells replays (RFC 3711 §3.3.2) from failed authentication."""
        alice, bob = self.pair()
        protected = alice.protect(rtp_packet(3))
        self.assertEqual(bob.unprotect_or_raise(protected), rtp_packet(3))
        with self.assertRaises(bob.errors) as replayed:
            bob.unprotect_or_raise(protected)
        tampered = bytearray(alice.protect(rtp_packet(4)))
        tampered[-1] ^= 0x01
        with self.assertRaises(bob.errors) as forged:
            bob.unprotect_or_raise(bytes(tampered))
        with self.assertRaises(bob.errors) as oversized:
            bob.unprotect_or_raise(bytes(2000))
        self.assertEqual((bob.replays, bob.auth_failures), (0, 0))
        for failure in (replayed, forged, oversized):
            bob.count_failure(failure.exception)
        self.assertEqual((bob.replays, bob.auth_failures), (1, 2))

    def test_wrong_key_dropped(self) -> None:
        """A packet from someone with another key never reaches the application."""
        alice, _ = self.pair()
        stranger, _ = self.pair()
        self.assertIsNone(stranger.unprotect(alice.protect(rtp_packet(1))))
        self.assertEqual(stranger.auth_failures, 1)

    def test_suite_mismatch(self) -> None:
        with self.assertRaises(SDESError):
            SRTPContext(
                CryptoAttribute.generate(suite="AES_CM_128_HMAC_SHA1_80"),
                CryptoAttribute.generate(suite="AES_CM_128_HMAC_SHA1_32"),
            )
