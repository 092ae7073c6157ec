"""Prometheus metrics of the service, summed over its worker processes.

prometheus-client's multiprocess mode: each worker writes its samples to memory-mapped files
in ``PROMETHEUS_MULTIPROC_DIR`` (``trillium serve`` makes a fresh one), and ``/metrics`` reads them
all, so one scrape sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

__all__ = ["BATCH_SIZE", "INFLIGHT", "MODEL_VERSION", "QUEUE_DEPTH", "REQUESTS", "REQUEST_SECONDS", "render"]

REQUESTS = Counter("trillium_http_requests_total", "HTTP requests answered, by route template and status.",
                   ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "trillium_http_request_duration_seconds", "Time from the request's arrival to its last byte, by route.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.045, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
BATCH_SIZE = Histogram("trillium_batch_size", "Requests per model call of the dynamic batcher, by model.",
                       ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
QUEUE_DEPTH = Gauge("trillium_queue_depth", "Requests waiting in a model's batcher queue (summed over workers).",
                    ["model"], multiprocess_mode="livesum")
INFLIGHT = Gauge("trillium_inflight_requests", "Requests being served now (summed over workers).",
                 multiprocess_mode="livesum")
MODEL_VERSION = Gauge("trillium_model_version", "The registry version each worker serves, by model and alias "
                      "(max over live workers; min differs during a switch).", ["model", "alias"],
                      multiprocess_mode="livemax")


def render() -> bytes:
    """The exposition text: every worker's samples when in multiprocess mode, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)
