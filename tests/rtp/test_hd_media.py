"""Wideband calls in the RTP stream (issue 12): G.722 and Opus framing and timestamps, the
telephone-event clock, sessions at the call's rate or their own, and loss concealment.

All on ``task.Clock`` with in-memory ports: the pacer's 20 ms ticks are advanced by hand.
"""

from __future__ import annotations

import os
import tempfile
import wave

import numpy as np
from twisted.internet import task
from twisted.trial import unittest

from tests.codecs.signals import aligned_correlation, band_fraction, frames, speech, tone
from tests.rtp.test_protocol import SDP_PEER, FakeDialog, FakePort, Recorder
from voiptwisted.codecs import CODECS
from voiptwisted.codecs.g711 import alaw_encode
from voiptwisted.codecs.g722 import G722Encoder
from voiptwisted.codecs.opus import OpusDecoder, OpusEncoder, OpusSettings
from voiptwisted.media.jitter import JitterBuffer, Lost
from voiptwisted.media.pacer import Pacer
from voiptwisted.media.session import PlaybackSession, RecordingSession, Session
from voiptwisted.media.wav import write_wav
from voiptwisted.rtp import protocol as rtp_protocol
from voiptwisted.rtp.dtmf import DTMFEvent
from voiptwisted.rtp.packet import RTPPacket
from voiptwisted.rtp.protocol import RealtimeTransportProtocol

PT = {"PCMA": 8, "G722": 9, "OPUS": 111}


class Wideband16k(Recorder):
    """A session that wants 16 kHz whatever the codec (a speech recogniser would)."""

    sample_rate = 16000


def make(codec: str, session_class: type[Session] = Recorder, ptime: int = 20, **kwargs):
    clock = task.Clock()
    proto = RealtimeTransportProtocol(reactor=clock, pacer=Pacer(clock))
    rtp = FakePort()
    proto.transport = rtp
    proto.ports = (rtp, FakePort())
    proto.configure(remote=SDP_PEER, codec=CODECS[codec], payload_type=PT[codec],
                    telephone_event_pt=101, ptime=ptime)
    session = session_class(FakeDialog(), **kwargs)
    session.attach(proto, clock)
    proto.start(session)
    return proto, clock, rtp, session


def sent(rtp: FakePort) -> list[RTPPacket]:
    """The RTP packets written (RTCP, packet types 200-204, left out)."""
    return [RTPPacket.parse(data) for data, _ in rtp.sent if not 200 <= data[1] <= 204]


def packet(pt: int, seq: int, step: int, payload: bytes) -> bytes:
    return RTPPacket(pt, seq, seq * step, 0xABCD, payload).serialize()


def ticks(clock: task.Clock, count: int) -> None:
    """*count* pacer ticks (each deadline met exactly, whatever float rounding adds up)."""
    for _ in range(count):
        clock.advance(0.02)
    clock.advance(1e-6)


def dominant(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1.0 / rate)[spectrum.argmax()])


class FramingTests(unittest.SynchronousTestCase):
    def test_g722_timestamp_advances_160_per_320_samples(self) -> None:
        """RFC 3551 §4.5.2: G.722 sends 320 samples (16 kHz) per 20 ms, 160 octets, and its
        RTP timestamp advances 160 (the 8000 Hz clock) per packet; the session is at 16 kHz."""
        _proto, clock, rtp, session = make("G722")
        self.assertEqual(session.sample_rate, 16000)
        self.assertEqual(session.frame_size, 320)
        session.send_audio(speech(16000, seconds=0.06))
        ticks(clock, 3)
        packets = sent(rtp)
        self.assertEqual([len(p.payload) for p in packets], [160, 160, 160])
        self.assertEqual([p.payload_type for p in packets], [9, 9, 9])
        first = packets[0].timestamp
        self.assertEqual([(p.timestamp - first) & 0xFFFFFFFF for p in packets], [0, 160, 320])

    def test_g722_ptime_40_codes_two_frames_in_one_packet(self) -> None:
        """a=ptime:40: two 20 ms G.722 frames back to back in one 320-octet packet."""
        _proto, clock, rtp, session = make("G722", ptime=40)
        session.send_audio(speech(16000, seconds=0.08))
        ticks(clock, 4)
        packets = sent(rtp)
        self.assertEqual([len(p.payload) for p in packets], [320, 320])
        self.assertEqual((packets[1].timestamp - packets[0].timestamp) & 0xFFFFFFFF, 320)

    def test_opus_timestamp_advances_960_and_one_frame_per_packet(self) -> None:
        """RFC 7587 §4.1-4.2: 48 kHz clock, 960 per 20 ms; one Opus packet per RTP packet,
        so a peer's a=ptime:40 still gets 20 ms packets, each decodable on its own."""
        _proto, clock, rtp, session = make("OPUS", ptime=40)
        self.assertEqual(session.sample_rate, 48000)
        session.send_audio(speech(48000, seconds=0.06))
        ticks(clock, 3)
        packets = sent(rtp)
        self.assertEqual(len(packets), 3)
        first = packets[0].timestamp
        self.assertEqual([(p.timestamp - first) & 0xFFFFFFFF for p in packets], [0, 960, 1920])
        decoder = OpusDecoder()
        self.assertEqual([len(decoder.decode(p.payload)) for p in packets], [960] * 3)

    def test_wrong_frame_size_from_session_does_not_stop_the_call(self) -> None:
        """A session sending 160-sample frames into a 48 kHz call (written for G.711) gets
        its frames padded to 960 rather than the encoder raising in the pacer."""
        proto, clock, rtp, _session = make("OPUS")

        class Narrow(Session):
            def next_frame(self) -> np.ndarray:
                return np.zeros(160, np.int16)

        proto.session = Narrow(FakeDialog())
        ticks(clock, 2)
        self.assertEqual(len(sent(rtp)), 2)
        self.assertIn(proto.tick, proto.pacer)

    def test_g722_received_audio_reaches_session_at_16k(self) -> None:
        """Received G.722 is decoded to 20 ms frames of 320 samples that follow the input."""
        proto, _clock, _rtp, session = make("G722")
        audio = speech(16000, seconds=0.5)
        encoder = G722Encoder()
        for seq, frame in enumerate(frames(audio, 320), 1):
            proto.datagramReceived(packet(9, seq, 160, encoder.encode(frame)), SDP_PEER)
        self.assertEqual({len(f) for f in session.audio}, {320})
        heard = np.concatenate(session.audio)
        self.assertGreater(aligned_correlation(audio, heard, 64), 0.9)


class DTMFClockTests(unittest.SynchronousTestCase):
    def events(self, codec: str) -> list[tuple[RTPPacket, DTMFEvent]]:
        _proto, clock, rtp, session = make(codec)
        session.send_dtmf("5")
        ticks(clock, 12)
        return [(p, DTMFEvent.decode(p.payload)) for p in sent(rtp) if p.payload_type == 101]

    def test_telephone_event_uses_the_opus_clock(self) -> None:
        """RFC 4733 §2.1 and §2.5.1.3: events use the audio stream's RTP clock, so with
        Opus (telephone-event/48000) the duration grows 960 per 20 ms update."""
        events = self.events("OPUS")
        durations = [e.duration for _, e in events if not e.end]
        self.assertEqual(durations, [960 * k for k in range(1, 6)])
        self.assertEqual(len({p.timestamp for p, _ in events}), 1)

    def test_telephone_event_uses_the_g722_clock(self) -> None:
        """RFC 4733 §2.1 with RFC 3551 §4.5.2: G.722's clock is 8000 Hz, 160 per 20 ms."""
        durations = [e.duration for _, e in self.events("G722") if not e.end]
        self.assertEqual(durations, [160 * k for k in range(1, 6)])


class SessionRateTests(unittest.SynchronousTestCase):
    def test_rate_follows_a_codec_change(self) -> None:
        """A re-INVITE from PCMA to Opus: the session's rate becomes 48 kHz before
        media_changed is called, and audio it had queued is resampled, not replayed fast."""
        proto, clock, rtp, session = make("PCMA")
        self.assertEqual(session.sample_rate, 8000)
        session.send_audio(tone(8000, 1000, seconds=0.1))
        proto.configure(remote=SDP_PEER, codec=CODECS["OPUS"], payload_type=111)
        self.assertEqual((session.sample_rate, session.frame_size), (48000, 960))
        self.assertEqual(session.queued_samples, 4800)
        ticks(clock, 5)
        decoder = OpusDecoder()
        decoded = np.concatenate([decoder.decode(p.payload) for p in sent(rtp)])
        self.assertLess(abs(dominant(decoded[960:], 48000) - 1000), 50)

    def test_fixed_rate_session_is_resampled_both_ways(self) -> None:
        """A session declaring sample_rate = 16000 on an Opus call hears 320-sample frames
        and what it sends at 16 kHz goes out as 48 kHz Opus at the same pitch."""
        proto, clock, rtp, session = make("OPUS", Wideband16k)
        self.assertEqual((session.sample_rate, session.frame_size), (16000, 320))
        self.assertEqual(proto.session_rate, 16000)
        encoder = OpusEncoder(OpusSettings())
        source = tone(48000, 1500, seconds=0.4)
        for seq, frame in enumerate(frames(source, 960), 1):
            proto.datagramReceived(packet(111, seq, 960, encoder.encode(frame)), SDP_PEER)
        self.assertEqual({len(f) for f in session.audio}, {320})
        heard = np.concatenate(session.audio)
        self.assertLess(abs(dominant(heard[1600:], 16000) - 1500), 50)
        session.send_audio(tone(16000, 700, seconds=0.2))
        ticks(clock, 10)
        decoder = OpusDecoder()
        decoded = np.concatenate([decoder.decode(p.payload) for p in sent(rtp)])
        self.assertEqual(len(decoded), 9600)
        self.assertLess(abs(dominant(decoded[1920:], 48000) - 700), 50)

    def test_fixed_rate_session_keeps_its_rate_across_codecs(self) -> None:
        proto, _clock, _rtp, session = make("PCMA", Wideband16k)
        self.assertEqual(proto.session_rate, 16000)
        proto.configure(remote=SDP_PEER, codec=CODECS["G722"], payload_type=9)
        self.assertEqual(session.sample_rate, 16000)
        self.assertIsNone(proto._rx_resampler)

    def test_session_rate_that_cannot_be_served_ends_the_call(self) -> None:
        """11025 Hz is no whole number of samples per 20 ms: the session's error, which ends
        its call (hang_up) like an exception in it would, not the RTP stream's."""

        class Odd(Recorder):
            sample_rate = 11025

        _proto, clock, _rtp, session = make("PCMA", Odd)
        hung = []
        session.hang_up = lambda: hung.append(True)  # type: ignore[method-assign]
        clock.advance(0)
        self.assertEqual(hung, [True])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_playback_of_an_8k_wav_on_an_opus_call(self) -> None:
        """PlaybackSession resamples the file (from its own rate) to the call's 48 kHz."""
        path = os.path.join(tempfile.mkdtemp(), "t.wav")
        write_wav(path, tone(8000, 440, seconds=1.0), 8000)
        proto, clock, _rtp, session = make("PCMA", PlaybackSession, path=path)
        ticks(clock, 10)
        proto.configure(remote=SDP_PEER, codec=CODECS["OPUS"], payload_type=111)
        frame = session.next_frame()
        self.assertEqual(len(frame), 960)
        self.assertLess(abs(dominant(frame, 48000) - 440), 60)
        self.assertEqual(session._position, 11 * 960)

    def test_recording_wav_rate_is_the_calls(self) -> None:
        """RecordingSession writes its WAV at the call's rate (16 kHz for G.722): one
        stereo frame of 320 samples per 20 ms pacer tick."""
        directory = tempfile.mkdtemp()
        proto, clock, _rtp, session = make("G722", RecordingSession, directory=directory)
        encoder = G722Encoder()
        for seq, frame in enumerate(frames(speech(16000, seconds=0.2), 320), 1):
            proto.datagramReceived(packet(9, seq, 160, encoder.encode(frame)), SDP_PEER)
            ticks(clock, 1)
        proto.stop()
        with wave.open(session.wav_path) as wav:
            self.assertEqual(wav.getframerate(), 16000)
            self.assertEqual(wav.getnframes(), 3200)


class ConcealmentTests(unittest.SynchronousTestCase):
    def test_g711_loss_is_concealed_one_frame_per_packet(self) -> None:
        """A lost PCMA packet becomes one repeat-and-fade frame once the jitter buffer gives
        up on it: the session still hears one frame per 20 ms, and no silence hole."""
        proto, _clock, _rtp, session = make("PCMA")
        payload = alaw_encode(np.full(160, 4000, np.int16))
        for seq in (1, 2, 4, 5, 6, 7):
            proto.datagramReceived(packet(8, seq, 160, payload), SDP_PEER)
        self.assertEqual(len(session.audio), 7)
        concealed = session.audio[2]
        self.assertGreater(np.abs(concealed[:80]).mean(), 2000)
        self.assertLess(np.abs(concealed[-10:]).mean(), np.abs(session.audio[1][-10:]).mean())

    def test_opus_loss_uses_fec_from_the_next_packet(self) -> None:
        """RFC 7587 §3.2: a lost Opus packet is rebuilt from the in-band FEC of the packet
        after it (already in the jitter buffer), which follows the lost audio better than
        libopus's blind concealment does."""
        audio = speech(48000, seconds=0.6)
        encoder = OpusEncoder(OpusSettings(bitrate=24000, packet_loss_percent=20))
        payloads = [encoder.encode(frame) for frame in frames(audio, 960)]
        lost = 12

        def run(with_fec: bool) -> list[np.ndarray]:
            proto, _clock, _rtp, session = make("OPUS")
            for seq, payload in enumerate(payloads, 1):
                if seq == lost + 1:
                    continue
                if not with_fec and seq == lost + 2:
                    # The same loss with the next packet's FEC unusable: concealment only.
                    proto._decoder.decode_fec = lambda _payload: proto._decoder.conceal()
                proto.datagramReceived(packet(111, seq, 960, payload), SDP_PEER)
            return session.audio

        fec, plc = run(True), run(False)
        self.assertEqual(len(fec), len(payloads))
        reference = audio[lost * 960 : (lost + 1) * 960]
        score_fec = aligned_correlation(reference, fec[lost], 400)
        score_plc = aligned_correlation(reference, plc[lost], 400)
        self.assertGreater(score_fec, score_plc)
        self.assertGreater(score_fec, 0.5)

    def test_concealment_is_bounded(self) -> None:
        """A peer jumping its sequence number by hundreds does not buy hundreds of frames:
        at most MAX_CONCEAL_FRAMES for one gap."""
        proto, _clock, _rtp, session = make("G722")
        encoder = G722Encoder()
        silence = encoder.encode(np.zeros(320, np.int16))
        proto.datagramReceived(packet(9, 1, 160, silence), SDP_PEER)
        for seq in range(900, 905):
            proto.datagramReceived(packet(9, seq, 160, silence), SDP_PEER)
        self.assertEqual(len(session.audio), 1 + rtp_protocol.MAX_CONCEAL_FRAMES + 5)


class JitterLossTests(unittest.SynchronousTestCase):
    def test_lost_marker_precedes_the_packet_playout_resumes_with(self) -> None:
        buffer = JitterBuffer(report_loss=True)

        class P:
            def __init__(self, seq: int) -> None:
                self.sequence, self.timestamp, self.ssrc = seq, seq * 160, 1

        out = []
        for seq in (1, 2, 5, 6, 7, 8):
            out += buffer.push(P(seq))
        shape = [f"L{x.count}" if isinstance(x, Lost) else x.sequence for x in out]
        self.assertEqual(shape, [1, 2, "L2", 5, 6, 7, 8])

    def test_window_follows_the_clock_rate(self) -> None:
        """60 ms of Opus is 2880 timestamp units, not 480."""
        buffer = JitterBuffer()
        buffer.set_clock_rate(48000)
        self.assertEqual(buffer.window_units, 2880)


class ResampleTests(unittest.SynchronousTestCase):
    def test_6khz_is_filtered_not_aliased_going_to_8k(self) -> None:
        """A proper resampler: 6 kHz at 48 kHz has no place at 8 kHz and is removed, where
        dropping samples would fold it to a loud 2 kHz."""
        from voiptwisted.media.resample import resample

        out = resample(tone(48000, 6000), 48000, 8000)
        self.assertEqual(len(out), 8000)
        self.assertLess(np.abs(out[200:-200]).max(), 200)
        dropped = tone(48000, 6000)[::6]
        self.assertGreater(band_fraction(dropped, 8000, 1900, 2100), 0.9)

    def test_stream_resampler_frames_join_without_clicks(self) -> None:
        """Frame by frame with state kept: the output matches a whole-buffer conversion."""
        from voiptwisted.media.resample import StreamResampler, resample

        audio = speech(16000, seconds=0.5)
        stream = StreamResampler(16000, 48000)
        out = np.concatenate([stream.convert(f) for f in frames(audio, 320)])
        self.assertEqual(len(out), 24000)
        whole = resample(audio, 16000, 48000)
        self.assertGreater(aligned_correlation(whole, out, 1200), 0.99)
