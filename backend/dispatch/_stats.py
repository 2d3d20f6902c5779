"""The counters and latencies of one JobManager, for :meth:`backend.JobManager.stats`.

One :class:`Stats` per manager, written by the threads that see each thing happen: the
JobManager's caller (a job submitted), the dispatcher thread (:mod:`backend.dispatch._dispatcher`: the
queue, the slots and the engines after each turn of its loop, each job's wait for a slot), the
callback managers (each job's final result). Every write and the snapshot take one lock and
do constant work, so :meth:`Stats.snapshot` is cheap from any thread; it returns plain,
JSON-serialisable data.
"""
from __future__ import annotations

import bisect
import collections
import threading
from typing import TYPE_CHECKING, Any, Counter, Deque, Dict, Optional, Sequence

from backend.model import InstanceConfig

if TYPE_CHECKING:
    from backend.model import Job
    from backend.dispatch._placement import Placement
    from backend.dispatch._shapes import WarmPool

#: Jobs the latencies are taken over: the last ones.
LATENCY_WINDOW = 1000
#: Upper bounds (seconds) of the buckets counting every queue wait and run time since the
#: start, for histograms (:mod:`backend.metrics`); the last bucket is everything above.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
           600.0)


class _Histogram:
    """Counts of values per bucket of :data:`BUCKETS` (the last: above them all), their
    sum and number, since the start: constant work per value."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.total = 0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value
        self.total += 1

    def snapshot(self) -> Dict[str, Any]:
        cumulative, running = [], 0
        for bound, count in zip(BUCKETS, self.counts):
            running += count
            cumulative.append([bound, running])
        return {"buckets": cumulative, "sum": round(self.sum, 6), "total": self.total}


def percentile(values: Sequence[float], fraction: float) -> Optional[float]:
    """The nearest-rank percentile of ``values`` (``fraction`` in [0, 1]); None for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil, at least the first
    return round(ordered[int(rank) - 1], 6)


def _latency(values: Deque[float], histogram: _Histogram) -> Dict[str, Any]:
    return dict({"p50": percentile(values, 0.5), "p95": percentile(values, 0.95),
                 "count": len(values)}, **histogram.snapshot())


class Stats:
    """See the module docstring. Every method is thread-safe."""

    def __init__(self, configs: Sequence[InstanceConfig]):
        self._lock = threading.Lock()
        self._submitted = 0
        self._queued = self._running = 0
        self._by_status: Counter[str] = collections.Counter()
        self._by_reason: Dict[str, Counter[str]] = collections.defaultdict(
            collections.Counter)
        self._queue_waits: Deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._run_times: Deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._queue_wait_histogram = _Histogram()
        self._run_time_histogram = _Histogram()
        self._engines: Dict[str, Dict[str, Any]] = {
            config.name: {"reachable": True, "running": 0, "engine_running": 0,
                          "managers": 1, "capacity": config.max_concurrent_jobs or None,
                          "warm_containers": 0, "warm_hits": 0}
            for config in configs}

    # -- writers -------------------------------------------------------------------------
    def submitted(self) -> None:
        with self._lock:
            self._submitted += 1

    def ended(self, job: "Job", result: Dict[str, Any]) -> None:
        """A job's final result (merged with its local check), before its callback; a job
        whose container started also gives its wait for a slot (and the creation)."""
        run = result.get("run") or {}
        with self._lock:
            if job.started_at is not None:
                wait = max(0.0, job.started_at - job.queued_at)
                self._queue_waits.append(wait)
                self._queue_wait_histogram.add(wait)
            status = str(result.get("result"))
            self._by_status[status] += 1
            if run.get("reason"):
                self._by_reason[status][str(run["reason"])] += 1
            if run.get("container_id") and isinstance(run.get("duration"), (int, float)):
                self._run_times.append(float(run["duration"]))
                self._run_time_histogram.add(float(run["duration"]))

    def dispatched(self, placement: "Placement", warm: Optional["WarmPool"] = None) -> None:
        """The dispatcher's view after a turn of its loop (in its thread): jobs waiting for
        a slot, jobs holding one, and each engine's state and counts."""
        with self._lock:
            self._queued = len(placement.queue)
            self._running = sum(placement.running.values())
            for engine, values in self._engines.items():
                load = placement.loads[engine]
                values.update(reachable=placement.is_reachable(engine),
                              running=placement.running[engine],
                              engine_running=load.running, managers=load.other_managers + 1)
                if warm is not None:
                    values.update(warm_containers=warm.count(engine),
                                  warm_hits=warm.hits[engine])

    # -- reader --------------------------------------------------------------------------
    def snapshot(self) -> Dict[str, Any]:
        """What :meth:`backend.JobManager.stats` returns (documented there)."""
        with self._lock:
            ended = sum(self._by_status.values())
            return {
                "jobs": {"submitted": self._submitted, "queued": self._queued,
                         "running": self._running, "ended": ended,
                         "by_status": dict(self._by_status),
                         "by_reason": {status: dict(reasons)
                                       for status, reasons in self._by_reason.items()}},
                "engines": {engine: dict(values) for engine, values in self._engines.items()},
                "queue_wait": _latency(self._queue_waits, self._queue_wait_histogram),
                "run_time": _latency(self._run_times, self._run_time_histogram)}
