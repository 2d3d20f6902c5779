"""Prometheus metrics of a JobManager, read from :meth:`~backend.JobManager.stats` at scrape
time (see docs/operations.rst): nothing is collected when nobody scrapes.

Needs the ``prometheus_client`` package (``pip install docker-job-manager[metrics]``)::

    from prometheus_client import start_http_server
    from backend import JobManager, metrics

    manager = JobManager(...)
    metrics.register(manager)
    start_http_server(9100, addr="127.0.0.1")

Every metric has the label ``manager`` (the manager's id), so that several managers in one
process are told apart; the engines' metrics also have ``engine`` (its name). The collector
runs in the thread of the scrape (the HTTP server's); ``stats()`` is cheap from any thread.
"""
from __future__ import annotations

import math
import weakref
from typing import Any, Dict, Iterator, List, Optional, Tuple

from prometheus_client.core import (REGISTRY, CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.registry import Collector, CollectorRegistry

from backend.job_manager import JobManager

#: The prefix of every metric's name.
PREFIX = "jobmanager"


class JobManagerCollector(Collector):
    """The metrics of one manager (it holds the manager weakly: a manager that is gone
    gives none)."""

    def __init__(self, manager: JobManager):
        self._manager = weakref.ref(manager)
        self.manager_id = manager.manager_id

    def collect(self) -> Iterator[Metric]:
        manager = self._manager()
        if manager is None:
            return
        yield from metrics_of(manager.stats(), self.manager_id)


def register(manager: JobManager, registry: Optional[CollectorRegistry] = None
             ) -> JobManagerCollector:
    """Exposes ``manager``'s ``stats()`` as Prometheus metrics in ``registry`` (default:
    prometheus_client's global one). Returns the collector: ``registry.unregister(it)``
    removes them.

    Raises:
        ValueError: this manager is already registered in ``registry``.
    """
    collector = JobManagerCollector(manager)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


def metrics_of(stats: Dict[str, Any], manager_id: str) -> List[Metric]:
    """The metrics of one ``stats()`` snapshot (pure: the unit tests call it)."""
    name = PREFIX
    jobs = stats["jobs"]
    label = [manager_id]
    submitted = CounterMetricFamily(f"{name}_jobs_submitted", "Jobs submitted.",
                                    labels=["manager"])
    submitted.add_metric(label, jobs["submitted"])
    ended = CounterMetricFamily(
        f"{name}_jobs_ended", "Jobs ended, by result status and reason (reason \"\": the "
        "job ended by itself; over_capacity: refused, the queue was full).",
        labels=["manager", "status", "reason"])
    for status, count in sorted(jobs["by_status"].items()):
        reasons = jobs["by_reason"].get(status, {})
        for reason, reason_count in sorted(reasons.items()):
            ended.add_metric([manager_id, status, reason], reason_count)
        plain = count - sum(reasons.values())
        if plain > 0 or not reasons:
            ended.add_metric([manager_id, status, ""], plain)
    queued = GaugeMetricFamily(f"{name}_jobs_queued", "Jobs waiting for a slot on an engine.",
                               labels=["manager"])
    queued.add_metric(label, jobs["queued"])
    running = GaugeMetricFamily(f"{name}_jobs_running", "Jobs holding a slot on an engine.",
                                labels=["manager"])
    running.add_metric(label, jobs["running"])
    found: List[Metric] = [submitted, ended, queued, running,
                           _histogram(f"{name}_queue_wait_seconds",
                                      "Seconds a job waited for a slot (until its container "
                                      "was created).", stats["queue_wait"], manager_id),
                           _histogram(f"{name}_run_time_seconds",
                                      "Seconds a job's container ran.", stats["run_time"],
                                      manager_id)]
    found.extend(_engines(stats["engines"], manager_id))
    return found


def _histogram(name: str, documentation: str, latency: Dict[str, Any], manager_id: str
               ) -> HistogramMetricFamily:
    buckets: List[Tuple[str, float]] = [(_bound(bound), count)
                                        for bound, count in latency["buckets"]]
    buckets.append(("+Inf", latency["total"]))
    histogram = HistogramMetricFamily(name, documentation, labels=["manager"])
    histogram.add_metric([manager_id], buckets, sum_value=latency["sum"])
    return histogram


def _bound(bound: float) -> str:
    return repr(float(bound))


#: Per engine: the key of ``stats()["engines"][name]``, the metric, its help, its kind.
_ENGINE_METRICS = (
    ("reachable", "engine_reachable", "1 if the engine answers, 0 if it is marked down.",
     "gauge"),
    ("running", "engine_running_jobs", "This manager's jobs running on the engine.", "gauge"),
    ("engine_running", "engine_running_containers",
     "Every manager's job containers running on the engine.", "gauge"),
    ("capacity", "engine_capacity",
     "max_concurrent_jobs of the engine (absent: no limit).", "gauge"),
    ("warm_containers", "engine_warm_containers",
     "Warm containers started or starting on the engine.", "gauge"),
    ("warm_hits", "engine_warm_hits", "Jobs served by a warm container.", "counter"),
)


def _engines(engines: Dict[str, Dict[str, Any]], manager_id: str) -> Iterator[Metric]:
    for key, metric, documentation, kind in _ENGINE_METRICS:
        family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        family = family_type(f"{PREFIX}_{metric}", documentation,
                             labels=["manager", "engine"])
        for engine, values in sorted(engines.items()):
            value = values.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue  # (a capacity of None: no limit)
            family.add_metric([manager_id, engine], float(value))
        yield family
