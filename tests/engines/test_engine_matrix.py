"""The core of the suite on every engine kind: Docker 20.10, Docker 28.5 at API floor 1.44
(as Docker 29), Podman 4.3's Docker-compatible service (``engine_kind`` in conftest).

Success, every limit and its reason, kill, output capture, labels, a job the engine refuses
(it stays reachable), the orphan sweep, and the engine's death and return. Each test gets two
engines of one kind; the leak check (conftest) sees that no container is left on them."""
import os
import socket
import time

import pytest

from backend import JobManager, JobManagerSync
from backend import docker as _docker
from backend.docker import _features
from backend.model._config import InstanceConfig
from backend.model._job import JobState
from helpers import PREFIX, api_client, dead_manager, ok_script, our_containers, shell, wait_for


def _instances(engines, **extra):
    return [dict({"server_url": e.url, "name": e.name, "container_prefix": PREFIX,
                  "time_between_polls": 0.2}, **extra) for e in engines]


@pytest.fixture
def kind_manager(engine_kind):
    kind, engines = engine_kind
    with JobManager(_instances(engines)) as manager:
        yield manager


def _run(manager, task, inputdata=None):
    return JobManagerSync(manager).new_job(task, inputdata, timeout=60)


def test_negotiated_version_and_features(engine_kind):
    kind, engines = engine_kind
    with _docker.connect(InstanceConfig.from_dict(_instances(engines)[0], 0)) as engine:
        features = engine.features
    expected = {"docker20": ("1.41", "local", _features.EngineKind.DOCKER),
                "docker28": (_features.MAX_API_VERSION, "local", _features.EngineKind.DOCKER),
                "podman": ("1.41", "k8s-file", _features.EngineKind.PODMAN)}[kind]
    assert (features.api_version, features.log_driver, features.kind) == expected
    assert features.init


def test_success_and_output_capture(kind_manager, engine_kind):
    text = "é" * 70000 + "\n"
    script = ("read -r line; printf 'err-no-newline' >&2; "
              "echo \"{\\\"result\\\": \\\"success\\\", \\\"n\\\": ${#line}}\"")
    result = _run(kind_manager, shell(script), text)
    assert result["result"] == "success", result
    assert result["run"]["stderr"] == "err-no-newline"
    assert result["run"]["host"] in {e.name for e in engine_kind[1]}
    assert result["run"]["exit_code"] == 0 and result["run"]["reason"] is None


@pytest.mark.parametrize("script, limits, status, reason", [
    ("while :; do :; done", {"time": 1, "hard_time": 20}, "timeout", "cpu_time"),
    ("sleep 30", {"hard_time": 1}, "timeout", "wall_time"),
    ("x=$(yes | head -c 300000000); echo done", {"memory": 20}, "overflow", "memory"),
    ("yes", {"output": 10000}, "overflow", "output"),
    # into /bin: Podman's container root directory is mode 0555, which a root without
    # capabilities cannot write to (Docker's is 0755)
    ("head -c 200000000 /dev/zero > /bin/big", {}, "overflow", "disk"),
], ids=["cpu_time", "wall_time", "memory", "output", "disk"])
def test_limits(kind_manager, script, limits, status, reason):
    result = _run(kind_manager, shell(script, limits=limits))
    assert (result["result"], result["run"]["reason"]) == (status, reason), result


def test_processes_limit(kind_manager):
    script = ('(for i in $(seq 100); do sleep 5 & done) 2>/dev/null; set -- /proc/[0-9]*; '
              'echo "{\\"result\\": \\"success\\", \\"n\\": $#}"')
    result = _run(kind_manager, shell(script, limits={"processes": 20}))
    assert result["result"] == "success", result
    assert result["n"] <= 20


def test_hardening_seen_from_inside(kind_manager):
    script = ('out=$({ grep -E "CapEff|NoNewPrivs" /proc/self/status; ls /sys/class/net; '
              'ulimit -n; } 2>&1 | tr "\\n\\t" "  "); '
              'echo "{\\"result\\": \\"success\\", \\"out\\": \\"$out\\"}"')
    result = _run(kind_manager, shell(script))
    assert result["out"].split() == ["CapEff:", "0" * 16, "NoNewPrivs:", "1", "lo", "1024"]


def test_kill_and_labels(kind_manager, engine_kind):
    future = kind_manager.submit(shell("sleep 30"), 1)
    found = []

    def labelled():
        for engine in engine_kind[1]:
            with api_client(engine.url) as client:
                found.extend(client.containers(filters={"label": f"backend.job={future.job_id}"}))
        return found
    wait_for(labelled, 30, "the job's container did not start")
    labels = found[0]["Labels"]
    assert labels["backend.manager"] == kind_manager.manager_id
    assert labels["backend.owner"] == f"{socket.gethostname()}:{os.getpid()}"
    assert kind_manager.kill_job(future.job_id)
    result = future.result(timeout=30)
    assert (result["result"], result["run"]["reason"]) == ("killed", "killed")


def _refused_task(kind):
    # Docker refuses more CPUs than the engine has (400 at create); Podman accepts that, and
    # refuses an unknown user (500 at attach)
    if kind == "podman":
        return shell(ok_script(), user="nosuchuser")
    return shell(ok_script(), limits={"cpus": 64})


def test_a_refused_job_leaves_the_engine_up(engine_kind):
    kind, engines = engine_kind
    task = _refused_task(kind)
    with JobManager(_instances(engines), process_pool_size=2) as manager:
        dispatcher = manager._dispatcher
        refused = _run(manager, task)
        assert (refused["result"], refused["run"]["reason"]) == ("crash", "start_failed")
        assert refused["run"]["host"] in refused["text"]
        assert all(dispatcher.placement.is_reachable(e.name) for e in engines)
        # jobs that run until killed: all 8 are placed while the others still run, however
        # slow the engine is to start them (a job that ended early would free its slot)
        futures = [manager.submit(shell("sleep 60"), i) for i in range(8)]
        wait_for(lambda: len(dispatcher.jobs) == 8 and all(
            j.state is JobState.RUNNING for j in dispatcher.jobs.values()), 60,
            "the 8 jobs did not all start")
        for future in futures:
            manager.kill_job(future.job_id)
        hosts = [f.result(timeout=60)["run"]["host"] for f in futures]
    assert sorted(hosts.count(e.name) for e in engines) == [4, 4], hosts


def test_orphan_sweep(engine_kind):
    kind, engines = engine_kind
    instances = _instances(engines)
    manager_id = dead_manager(instances)

    def left():
        return [c for c in our_containers(engines)
                if c["Labels"]["backend.manager"] == manager_id]
    assert len(left()) == 2
    with JobManager(instances):  # its start sweeps the dead manager's containers
        wait_for(lambda: not left(), 30, "the dead manager's containers were not swept")


@pytest.mark.timeout(180)
def test_engine_death_and_return(engine_kind):
    """Docker: a killed dockerd takes its jobs' results with it (``engine_lost``).
    Podman: the containers outlive the killed service (conmon runs them): the job goes on,
    and its result comes once the service is back."""
    kind, engines = engine_kind
    dying, other = engines
    with JobManager(_instances([dying, other])) as manager:
        dispatcher = manager._dispatcher
        futures = [manager.submit(shell("sleep 4; " + ok_script()), i) for i in range(2)]
        wait_for(lambda: len(dispatcher.jobs) == 2
              and all(j.state is JobState.RUNNING for j in dispatcher.jobs.values()), 30,
              "jobs did not start")
        on_dying = next(f for f in futures if dispatcher.jobs[f.job_id].engine == dying.name)
        dying.kill()
        wait_for(lambda: not dispatcher.placement.is_reachable(dying.name), 15,
              f"{dying.name} not marked down")
        placed = manager.submit(shell(ok_script()), 3).result(timeout=30)
        assert placed["result"] == "success" and placed["run"]["host"] == other.name
        if kind == "podman":
            assert not on_dying.done()
        dying.start()
        wait_for(lambda: dispatcher.placement.is_reachable(dying.name), 30,
              f"{dying.name} not marked up again")
        # Podman's container ran on and ended by itself, but the waiter lost its output
        # stream and its events with the service: like Docker's, the job ends engine_lost
        result = on_dying.result(timeout=60)
        assert (result["result"], result["run"]["reason"]) == ("crash", "engine_lost"), result
        hosts = {manager.submit(shell(ok_script("sleep 0.5; ")), i).result(timeout=30)
                 ["run"]["host"] for i in range(4, 8)}
        assert dying.name in hosts
        label = f"backend.manager={manager.manager_id}"
        with api_client(dying.url) as client:
            wait_for(lambda: not client.containers(all=True, filters={"label": label}), 40,
                  "the job's container on the engine that died was never removed")
