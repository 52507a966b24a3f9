"""The service's counters in the Prometheus text format (`GET /metrics`), one registry per app.

pneumo_requests_total{method, path, status}   requests answered
pneumo_request_seconds{path}                   latency histogram
pneumo_batch_size                              images per forward pass (micro-batching at work)
pneumo_predictions_total{outcome}              verdicts given: NORMAL, PNEUMONIA, or abstain
pneumo_errors_total{status}                    4xx and 5xx answers
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["ServiceMetrics", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
_PATHS = frozenset({"/v1/predict", "/v1/model", "/healthz", "/metrics", "/"})


class ServiceMetrics:
    """What `pneumo serve` counts; `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pneumo_requests", "Requests answered", ["method", "path", "status"], registry=self.registry)
        self.latency = Histogram(
            "pneumo_request_seconds", "Time to answer a request", ["path"], buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.batch_size = Histogram("pneumo_batch_size", "Images per forward pass", buckets=_BATCH_BUCKETS, registry=self.registry)
        self.predictions = Counter("pneumo_predictions", "Verdicts given, or abstentions", ["outcome"], registry=self.registry)
        self.errors = Counter("pneumo_errors", "Answers with a 4xx or 5xx status", ["status"], registry=self.registry)

    def request(self, method: str, path: str, status: int, seconds: float) -> None:
        path = path if path in _PATHS else "other"  # bounded label values: no label per scanned URL
        self.requests.labels(method, path, str(status)).inc()
        self.latency.labels(path).observe(seconds)
        if status >= 400:
            self.errors.labels(str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
