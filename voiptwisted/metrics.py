"""What a service did, for Prometheus (``--metrics``) and call records (``--cdr``).

:class:`CallObserver` is the ``observer`` hook of every UA core of a service
(:attr:`voiptwisted.sip.core.UserAgentCore.observer`): it counts SIP messages in plain
integers, follows each call from its INVITE to its end (final status, answer time, who
hung up, its media) and hands every ended call's :class:`CallRecord` to its listeners
(the call record writer, :mod:`voiptwisted.cdr`).

:class:`ServiceCollector` turns that, plus the RTP statistics the media already keeps
(``MediaStats``) and the shared pacer's lateness, into Prometheus metric families *at
scrape time*: nothing on the packet path increments a Prometheus object, so metrics cost
nothing between scrapes.  Label values are bounded (direction, SIP method, status class,
final status code): no per-call labels.  Each service has its own ``CollectorRegistry``
(:func:`metrics_resource`), never the process-global one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from twisted.logger import Logger

__all__ = [
    "SETUP_BUCKETS",
    "CallObserver",
    "CallRecord",
    "ServiceCollector",
    "metrics_resource",
    "service_registry",
]

log = Logger()

#: Upper bounds (seconds) of the call setup latency histogram (INVITE to 2xx).
SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Methods counted by name; any other method is counted as "other" (bounded labels).
_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK",
     "REFER", "NOTIFY", "SUBSCRIBE", "MESSAGE"}
)  # fmt: skip
_RTP_FIELDS = ("packets_sent", "packets_received", "lost", "late", "auth_failures")


def _method(name: str) -> str:
    return name if name in _METHODS else "other"


@dataclasses.dataclass
class CallRecord:
    """One call as the observer saw it; times are the clock's seconds (epoch on a reactor)."""

    call_id: str
    direction: str  # "inbound" or "outbound"
    from_uri: str
    to_uri: str
    start: float
    answer: float | None = None
    end: float | None = None
    final_status: int | None = None
    #: "local" or "remote": who ended the call; and how ("bye", "cancel", "rejected", ...).
    hangup_side: str | None = None
    hangup_reason: str | None = None
    codec: str | None = None
    srtp: bool = False
    packets_sent: int = 0
    packets_received: int = 0
    lost: int = 0
    late: int = 0
    auth_failures: int = 0
    jitter_max_ms: float = 0.0
    jitter_sum_ms: float = 0.0
    jitter_samples: int = 0
    dialog: Any = dataclasses.field(default=None, repr=False)
    media: Any = dataclasses.field(default=None, repr=False)

    @property
    def jitter_mean_ms(self) -> float:
        return self.jitter_sum_ms / self.jitter_samples if self.jitter_samples else 0.0

    def sample(self) -> None:
        """Read the call's media statistics now (jitter max/mean, packet counters)."""
        media = self.media
        if media is None and self.dialog is not None:
            media = self.media = getattr(self.dialog, "media", None)
        if media is None:
            return
        try:
            stats = media.stats
        except Exception:  # a media stand-in without statistics
            return
        if stats is None:
            return
        for name in _RTP_FIELDS:
            setattr(self, name, getattr(stats, name, 0))
        jitter = float(getattr(stats, "jitter_ms", 0.0))
        self.jitter_max_ms = max(self.jitter_max_ms, jitter)
        self.jitter_sum_ms += jitter
        self.jitter_samples += 1
        negotiated = getattr(media, "negotiated", None)
        if negotiated is not None:
            self.codec = getattr(negotiated, "codec_name", None)
        self.srtp = bool(getattr(media, "secure", False))


class CallObserver:
    """The cores' observer: message counters and one :class:`CallRecord` per call.

    Costs a dict update per SIP message and nothing per RTP packet.  ``listeners`` are
    called with each ended call's record.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        #: (direction "in"/"out", method) -> requests; (direction, method, "2xx") -> responses.
        self.requests: dict[tuple[str, str], int] = {}
        self.responses: dict[tuple[str, str, str], int] = {}
        #: (direction, final status code or "none") -> ended calls.
        self.calls: dict[tuple[str, str], int] = {}
        self.setup_buckets = [0] * len(SETUP_BUCKETS)
        self.setup_count = 0
        self.setup_sum = 0.0
        self.registration_failures = 0
        #: RTP counters of ended calls (the live ones are read from their media at scrape).
        self.ended_rtp = dict.fromkeys(_RTP_FIELDS, 0)
        self.active: dict[str, CallRecord] = {}
        self.listeners: list[Callable[[CallRecord], None]] = []

    # -- hooks of UserAgentCore ----------------------------------------------------------

    def message_in(self, message: Any) -> None:
        self._count("in", message)

    def message_out(self, message: Any) -> None:
        self._count("out", message)

    def dialog_registered(self, dialog: Any) -> None:
        """A core tracks *dialog*: a new call (or one adopted by a new flow: kept as it is)."""
        if dialog.call_id in self.active:
            return
        inbound = bool(getattr(dialog, "inbound", False))
        local = str(dialog.local_party) if dialog.local_party is not None else ""
        remote = str(dialog.remote_party) if dialog.remote_party is not None else ""
        record = CallRecord(
            call_id=dialog.call_id,
            direction="inbound" if inbound else "outbound",
            from_uri=remote if inbound else local,
            to_uri=local if inbound else remote,
            start=self.clock.seconds(),
            dialog=dialog,
        )
        self.active[dialog.call_id] = record
        dialog.when_ended().addCallback(lambda _: self._ended(record))

    # -- bookkeeping ---------------------------------------------------------------------

    def _count(self, direction: str, message: Any) -> None:
        method = getattr(message, "method", None)
        if method is not None:
            key = (direction, _method(method))
            self.requests[key] = self.requests.get(key, 0) + 1
            record = self.active.get(message.call_id)
            if record is not None:
                self._request_for_call(record, direction, method)
            return
        code = message.status_code
        cseq_method = message.cseq[1]
        rkey = (direction, _method(cseq_method), f"{code // 100}xx")
        self.responses[rkey] = self.responses.get(rkey, 0) + 1
        if cseq_method == "REGISTER" and direction == "in" and code >= 300 and code not in (
            401, 407
        ):
            self.registration_failures += 1
        if cseq_method == "INVITE" and code >= 200:
            record = self.active.get(message.call_id)
            ours = direction == ("out" if record and record.direction == "inbound" else "in")
            if record is not None and ours and record.final_status is None:
                self._final(record, code)

    def _request_for_call(self, record: CallRecord, direction: str, method: str) -> None:
        if record.media is None:
            record.media = getattr(record.dialog, "media", None)
        if method in ("BYE", "CANCEL") and record.hangup_side is None:
            record.hangup_side = "remote" if direction == "in" else "local"
            record.hangup_reason = method.lower()

    def _final(self, record: CallRecord, code: int) -> None:
        record.final_status = code
        now = self.clock.seconds()
        if 200 <= code < 300:
            record.answer = now
            latency = now - record.start
            self.setup_count += 1
            self.setup_sum += latency
            for i, bound in enumerate(SETUP_BUCKETS):
                if latency <= bound:
                    self.setup_buckets[i] += 1
        elif record.hangup_side is None:
            # Who refused: we did an inbound call, the far end an outbound one.
            record.hangup_side = "local" if record.direction == "inbound" else "remote"
            record.hangup_reason = "rejected"

    def _ended(self, record: CallRecord) -> None:
        self.active.pop(record.call_id, None)
        record.end = self.clock.seconds()
        record.sample()
        record.dialog = None
        if record.hangup_side is None:
            record.hangup_side, record.hangup_reason = "local", "ended"
        status = str(record.final_status) if record.final_status is not None else "none"
        key = (record.direction, status)
        self.calls[key] = self.calls.get(key, 0) + 1
        for name in _RTP_FIELDS:
            self.ended_rtp[name] += getattr(record, name)
        record.media = None
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                log.failure("call record listener failed for {call_id}", call_id=record.call_id)

    def sample(self) -> None:
        """Sample every active call's media (jitter mean/max for the call records)."""
        for record in list(self.active.values()):
            record.sample()


class ServiceCollector:
    """A Prometheus collector reading a service's :class:`CallObserver` at scrape time."""

    def __init__(self, service: Any, observer: CallObserver, pacer: Any = None) -> None:
        self.service = service
        self.observer = observer
        self.pacer = pacer

    def describe(self) -> list[Any]:
        """Nothing up front: the families are built per scrape (no duplicate checks needed)."""
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        observer = self.observer
        # Snapshots: this runs in a thread-pool thread while the reactor updates them.
        active = list(observer.active.values())
        calls_by_status = dict(observer.calls)
        requests_by_method = dict(observer.requests)
        responses_by_class = dict(observer.responses)
        gauge = GaugeMetricFamily("voip_calls_active", "Calls ringing or up", labels=["direction"])
        for direction in ("inbound", "outbound"):
            gauge.add_metric([direction], sum(r.direction == direction for r in active))
        yield gauge
        calls = CounterMetricFamily(
            "voip_calls", "Ended calls by direction and final status code ('none': no final "
            "response, e.g. cancelled before one)", labels=["direction", "status"])
        for (direction, status), n in sorted(calls_by_status.items()):
            calls.add_metric([direction, status], n)
        yield calls
        # setup_buckets are already cumulative (a call counts in every bucket it fits).
        counts = zip(SETUP_BUCKETS, observer.setup_buckets, strict=True)
        buckets = [(repr(bound), n) for bound, n in counts]
        buckets.append(("+Inf", observer.setup_count))
        yield HistogramMetricFamily(
            "voip_call_setup_seconds", "INVITE to 2xx of answered calls",
            buckets=buckets, sum_value=observer.setup_sum)
        draining = GaugeMetricFamily("voip_draining", "1 while the service refuses new calls")
        draining.add_metric([], 1 if getattr(self.service, "draining", False) else 0)
        yield draining
        registration = getattr(getattr(self.service, "client", None), "registration", None)
        registered = GaugeMetricFamily(
            "voip_registered", "1 while the AOR is registered (absent without --aor)")
        if registration is not None:
            registered.add_metric([], 1 if registration.registered else 0)
        yield registered
        failures = CounterMetricFamily(
            "voip_registration_failures", "REGISTER answered with a final error (not 401/407)")
        failures.add_metric([], observer.registration_failures)
        yield failures
        requests = CounterMetricFamily(
            "voip_sip_requests", "SIP requests by direction and method",
            labels=["direction", "method"])
        for key, n in sorted(requests_by_method.items()):
            requests.add_metric(list(key), n)
        yield requests
        responses = CounterMetricFamily(
            "voip_sip_responses", "SIP responses by direction, CSeq method and status class",
            labels=["direction", "method", "status_class"])
        for key, n in sorted(responses_by_class.items()):
            responses.add_metric(list(key), n)
        yield responses
        yield from self._rtp(active)
        if self.pacer is not None:
            lateness = GaugeMetricFamily(
                "voip_pacer_lateness_seconds", "How late the 20 ms media pacer ran",
                labels=["which"])
            lateness.add_metric(["last"], self.pacer.last_lateness)
            lateness.add_metric(["max"], self.pacer.max_lateness)
            yield lateness

    def _rtp(self, active: list[CallRecord]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        totals = dict(self.observer.ended_rtp)
        jitter = 0.0
        for record in active:
            media = record.media if record.media is not None else getattr(
                record.dialog, "media", None)
            stats = getattr(media, "stats", None) if media is not None else None
            if stats is None:
                continue
            for name in _RTP_FIELDS:
                totals[name] += getattr(stats, name, 0)
            jitter = max(jitter, float(getattr(stats, "jitter_ms", 0.0)))
        names = {
            "packets_sent": ("voip_rtp_packets_sent", "RTP packets sent"),
            "packets_received": ("voip_rtp_packets_received", "RTP packets received"),
            "lost": ("voip_rtp_packets_lost", "RTP packets lost (RFC 3550 §6.4.1)"),
            "late": ("voip_rtp_packets_late", "RTP packets dropped by the jitter buffer as late"),
            "auth_failures": ("voip_srtp_auth_failures", "SRTP packets failing authentication"),
        }
        for field, (name, help_text) in names.items():
            counter = CounterMetricFamily(name, help_text)
            counter.add_metric([], totals[field])
            yield counter
        gauge = GaugeMetricFamily(
            "voip_rtp_jitter_max_milliseconds", "Largest interarrival jitter of the active calls")
        gauge.add_metric([], jitter)
        yield gauge


def service_registry(service: Any, observer: CallObserver, pacer: Any = None) -> Any:
    """A ``CollectorRegistry`` of *service*'s own (never the process-global one)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service, observer, pacer))
    return registry


def metrics_resource(registry: Any) -> Any:
    """``prometheus_client.twisted.MetricsResource`` for *registry*: a WSGI resource that
    renders in the reactor's thread pool, which is why :meth:`ServiceCollector.collect`
    only reads snapshots (one C-level copy of each table) of what the reactor updates."""
    from prometheus_client.twisted import MetricsResource

    return MetricsResource(registry=registry)
