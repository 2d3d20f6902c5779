"""Prometheus metrics (backend.metrics, docs/operations.rst): a manager's ``stats()`` scraped
over HTTP from a real engine's jobs (success, failure, over capacity), value for value; the
pure translation of a snapshot; several managers told apart by their label."""
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from backend import JobManager, metrics
from backend.dispatch._stats import BUCKETS
from helpers import ok_script, shell
from helpers import wait_for


def samples(text):
    """``{(name, labels as a sorted tuple): value}`` of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return samples(answer.read().decode())


@pytest.mark.timeout(120)
def test_metrics_scraped_over_http_are_what_stats_gives(engines, instances):
    instances = [dict(instances[0], max_concurrent_jobs=1)]
    registry = CollectorRegistry()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        with JobManager(instances, max_queued_jobs=1) as manager:
            metrics.register(manager, registry)
            futures = [manager.submit(shell(ok_script("sleep 1; ")), i) for i in range(3)]
            futures.append(manager.submit(shell("read line; exit 3"), 4))
            results = [future.result(timeout=60) for future in futures]
            assert [r["run"]["reason"] for r in results].count("over_capacity") >= 1
            wait_for(lambda: manager.stats()["jobs"]["running"] == 0, 30, "slots not freed")
            stats = manager.stats()
            found = scrape(server.server_address[1])
            me = (("manager", manager.manager_id),)
            engine = (("engine", "e1"),) + me
            assert found[("jobmanager_jobs_submitted_total", me)] == stats["jobs"]["submitted"]
            ended = {key: value for key, value in found.items()
                     if key[0] == "jobmanager_jobs_ended_total"}
            assert sum(ended.values()) == stats["jobs"]["ended"] == 4
            by_reason = stats["jobs"]["by_reason"]
            assert found[("jobmanager_jobs_ended_total",
                          me + (("reason", "over_capacity"), ("status", "crash")))] == \
                by_reason["crash"]["over_capacity"]
            for status, count in stats["jobs"]["by_status"].items():
                assert sum(value for key, value in ended.items()
                           if ("status", status) in key[1]) == count
            assert found[("jobmanager_jobs_queued", me)] == stats["jobs"]["queued"] == 0
            assert found[("jobmanager_jobs_running", me)] == stats["jobs"]["running"] == 0
            for name, key in (("queue_wait", "jobmanager_queue_wait_seconds"),
                              ("run_time", "jobmanager_run_time_seconds")):
                started = sum(1 for r in results if r["run"]["container_id"])
                assert found[(f"{key}_count", me)] == stats[name]["total"] == started >= 2
                assert found[(f"{key}_sum", me)] == pytest.approx(stats[name]["sum"])
                for bound, count in stats[name]["buckets"]:
                    assert found[(f"{key}_bucket", (("le", repr(float(bound))),) + me)] == count
                assert found[(f"{key}_bucket", (("le", "+Inf"),) + me)] == stats[name]["total"]
            values = stats["engines"]["e1"]
            assert found[("jobmanager_engine_reachable", engine)] == 1 == values["reachable"]
            assert found[("jobmanager_engine_capacity", engine)] == 1 == values["capacity"]
            assert found[("jobmanager_engine_running_jobs", engine)] == values["running"]
            assert found[("jobmanager_engine_running_containers", engine)] == \
                values["engine_running"]
            assert found[("jobmanager_engine_warm_containers", engine)] == 0
            assert found[("jobmanager_engine_warm_hits_total", engine)] == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def snapshot(**changes):
    empty = {"buckets": [[b, 0] for b in BUCKETS], "sum": 0.0, "total": 0,
             "p50": None, "p95": None, "count": 0}
    base = {"jobs": {"submitted": 0, "queued": 0, "running": 0, "ended": 0, "by_status": {},
                     "by_reason": {}},
            "engines": {"a": {"reachable": False, "running": 0, "engine_running": 0,
                              "managers": 1, "capacity": None, "warm_containers": 0,
                              "warm_hits": 0}},
            "queue_wait": empty, "run_time": empty}
    base.update(changes)
    return base


class _Manager:
    """What register() reads of a JobManager."""

    def __init__(self, manager_id, stats):
        self.manager_id = manager_id
        self._stats = stats
        self.calls = 0

    def stats(self):
        self.calls += 1
        return self._stats


def test_statuses_without_a_reason_an_unlimited_engine_and_two_managers():
    jobs = {"submitted": 5, "queued": 2, "running": 1, "ended": 3,
            "by_status": {"success": 2, "timeout": 1}, "by_reason": {"timeout": {"wall_time": 1}}}
    first = _Manager("m1", snapshot(jobs=jobs))
    second = _Manager("m2", snapshot())
    registry = CollectorRegistry()
    metrics.register(first, registry)
    metrics.register(second, registry)
    assert first.calls == 0  # nothing is read until a scrape
    found = samples(generate_latest(registry).decode())
    assert first.calls == 1
    m1 = (("manager", "m1"),)
    assert found[("jobmanager_jobs_ended_total", m1 + (("reason", ""), ("status", "success")))] \
        == 2
    assert found[("jobmanager_jobs_ended_total",
                  m1 + (("reason", "wall_time"), ("status", "timeout")))] == 1
    assert ("jobmanager_jobs_ended_total", m1 + (("reason", ""), ("status", "timeout"))) \
        not in found
    assert found[("jobmanager_jobs_queued", m1)] == 2
    assert found[("jobmanager_jobs_submitted_total", (("manager", "m2"),))] == 0
    assert found[("jobmanager_engine_reachable", (("engine", "a"), ("manager", "m2")))] == 0
    assert not [key for key in found if key[0] == "jobmanager_engine_capacity"]  # no limit


def test_a_manager_that_is_gone_gives_nothing():
    manager = _Manager("gone", snapshot())
    registry = CollectorRegistry()
    metrics.register(manager, registry)
    del manager
    assert "jobmanager_" not in generate_latest(registry).decode()
