"""ServiceMetrics: what `GET /metrics` says after the service has counted requests, errors, batches and verdicts.

The rendered text is parsed back with prometheus_client's own parser, so the tests check the numbers a
Prometheus server would scrape, not the layout of the lines.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pneumo.service.metrics import CONTENT_TYPE_LATEST, ServiceMetrics


def _samples(metrics: ServiceMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered text: (name, sorted labels) -> value."""
    text = metrics.render().decode("utf-8")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def _families(metrics: ServiceMetrics) -> dict[str, str]:
    """Family name -> type, leaving out the `_created` timestamps prometheus_client adds (or not, by its settings)."""
    families = text_string_to_metric_families(metrics.render().decode("utf-8"))
    return {f.name: f.type for f in families if not f.name.endswith("_created")}


def test_render_is_prometheus_text_with_every_family_declared() -> None:
    metrics = ServiceMetrics()
    body = metrics.render()
    assert isinstance(body, bytes)
    text = body.decode("utf-8")
    assert "# HELP pneumo_requests_total Requests answered" in text and "# TYPE pneumo_requests_total counter" in text
    assert "# TYPE pneumo_request_seconds histogram" in text and "# TYPE pneumo_batch_size histogram" in text
    assert _families(metrics) == {
        "pneumo_requests": "counter",
        "pneumo_request_seconds": "histogram",
        "pneumo_batch_size": "histogram",
        "pneumo_predictions": "counter",
        "pneumo_errors": "counter",
    }
    assert CONTENT_TYPE_LATEST.startswith("text/plain") and "version=" in CONTENT_TYPE_LATEST


def test_a_fresh_registry_has_no_labelled_samples_and_an_empty_batch_histogram() -> None:
    samples = _samples(ServiceMetrics())
    assert not any(name.startswith(("pneumo_requests_total", "pneumo_errors_total", "pneumo_predictions_total")) for name, _ in samples)
    assert samples[("pneumo_batch_size_count", ())] == 0 and samples[("pneumo_batch_size_sum", ())] == 0


def test_requests_are_counted_by_method_path_and_status() -> None:
    metrics = ServiceMetrics()
    for _ in range(3):
        metrics.request("POST", "/v1/predict", 200, 0.03)
    metrics.request("GET", "/healthz", 200, 0.001)
    metrics.request("POST", "/v1/predict", 400, 0.002)
    samples = _samples(metrics)
    requests = {labels: v for (name, labels), v in samples.items() if name == "pneumo_requests_total"}
    assert requests == {
        (("method", "POST"), ("path", "/v1/predict"), ("status", "200")): 3.0,
        (("method", "GET"), ("path", "/healthz"), ("status", "200")): 1.0,
        (("method", "POST"), ("path", "/v1/predict"), ("status", "400")): 1.0,
    }


def test_latency_lands_in_the_right_buckets_per_path() -> None:
    metrics = ServiceMetrics()
    for seconds in (0.003, 0.03, 0.03, 2.0, 45.0):
        metrics.request("POST", "/v1/predict", 200, seconds)
    metrics.request("GET", "/healthz", 200, 0.001)
    samples = _samples(metrics)

    def bucket(le: str, path: str = "/v1/predict") -> float:
        return samples[("pneumo_request_seconds_bucket", (("le", le), ("path", path)))]

    assert [bucket(le) for le in ("0.005", "0.025", "0.05", "1.0", "2.5", "30.0", "+Inf")] == [1, 1, 3, 3, 4, 4, 5]
    assert samples[("pneumo_request_seconds_count", (("path", "/v1/predict"),))] == 5
    assert samples[("pneumo_request_seconds_sum", (("path", "/v1/predict"),))] == pytest.approx(47.063)
    assert bucket("0.005", "/healthz") == 1 and samples[("pneumo_request_seconds_count", (("path", "/healthz"),))] == 1


@pytest.mark.parametrize(
    ("status", "is_error"), [(200, False), (304, False), (399, False), (400, True), (413, True), (500, True), (503, True)]
)
def test_only_4xx_and_5xx_answers_count_as_errors(status: int, is_error: bool) -> None:
    metrics = ServiceMetrics()
    metrics.request("POST", "/v1/predict", status, 0.01)
    errors = {labels: v for (name, labels), v in _samples(metrics).items() if name == "pneumo_errors_total"}
    assert errors == ({(("status", str(status)),): 1.0} if is_error else {})


def test_unknown_paths_share_one_label() -> None:
    """A scanner probing thousands of URLs must not make thousands of series."""
    metrics = ServiceMetrics()
    for path in ("/wp-admin", "/.env", "/v1/predict/../../etc/passwd", "/v1/Predict", "/metrics/"):
        metrics.request("GET", path, 404, 0.001)
    for path in ("/v1/predict", "/v1/model", "/healthz", "/metrics", "/"):
        metrics.request("GET", path, 200, 0.001)
    paths = {dict(labels)["path"] for (name, labels), _ in _samples(metrics).items() if name == "pneumo_requests_total"}
    assert paths == {"other", "/v1/predict", "/v1/model", "/healthz", "/metrics", "/"}
    assert _samples(metrics)[("pneumo_requests_total", (("method", "GET"), ("path", "other"), ("status", "404")))] == 5
    assert "/wp-admin" not in metrics.render().decode()


def test_batch_sizes_and_verdicts_are_counted() -> None:
    metrics = ServiceMetrics()
    for size in (1, 3, 3, 64, 100):
        metrics.batch_size.observe(size)
    for outcome in ("PNEUMONIA", "PNEUMONIA", "NORMAL", "abstain"):
        metrics.predictions.labels(outcome).inc()
    samples = _samples(metrics)
    assert [samples[("pneumo_batch_size_bucket", (("le", le),))] for le in ("1.0", "2.0", "4.0", "32.0", "64.0", "+Inf")] == [
        1,
        1,
        3,
        3,
        4,
        5,
    ]
    assert samples[("pneumo_batch_size_sum", ())] == 171
    predictions = {dict(labels)["outcome"]: v for (name, labels), v in samples.items() if name == "pneumo_predictions_total"}
    assert predictions == {"PNEUMONIA": 2, "NORMAL": 1, "abstain": 1}


def test_each_instance_counts_on_its_own() -> None:
    """One registry per app: two apps in one process (tests, a second model) neither clash nor share counts."""
    first, second = ServiceMetrics(), ServiceMetrics()
    first.request("GET", "/healthz", 200, 0.001)
    first.request("GET", "/healthz", 200, 0.001)
    second.request("GET", "/healthz", 200, 0.001)
    key = ("pneumo_requests_total", (("method", "GET"), ("path", "/healthz"), ("status", "200")))
    assert _samples(first)[key] == 2 and _samples(second)[key] == 1
    assert first.registry is not second.registry
