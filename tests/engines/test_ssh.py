"""Engines over ssh:// (docs/engines.rst) against an sshd of the test run's own on 127.0.0.1
(tests/sshd.py), whose ``docker`` talks to the session's private engines: the core jobs (JSON,
raw, files both ways, a large input, a kill), image builds, warm starts, an engine lost over
ssh and back, and ssh's own errors as one line, with no hang. The manager's children use the
test's ``ssh`` (first on ``PATH``, with its own configuration and ``known_hosts``): they are
spawned, so that they see this test's ``PATH``."""
import time

import pytest

from backend import JobManager, JobManagerSync, Task
from backend import docker as _docker
from backend.model._config import InstanceConfig
from backend.model._job import JobState
from helpers import PREFIX, ROOT, ok_script, shell
from helpers import wait_for
from sshd import TestSshd, ssh_processes


@pytest.fixture(scope="module")
def sshd(engines):
    server = TestSshd(ROOT / "sshd", {engine.name: engine.url for engine in engines})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def over_ssh(sshd, monkeypatch):
    """The sshd, with the test's ``ssh`` first on ``PATH``; no ssh process may outlive it."""
    monkeypatch.setenv("PATH", sshd.path)
    yield sshd
    wait_for(lambda: not ssh_processes(), 15, "ssh processes outlived the manager")


@pytest.fixture
def own_sshd(engines, monkeypatch):
    """An sshd of this test alone (it stops and starts it), with its ``ssh`` first on
    ``PATH``; stopped before the leak check."""
    server = TestSshd(ROOT / "sshd-own", {engine.name: engine.url for engine in engines})
    server.start()
    monkeypatch.setenv("PATH", server.path)
    yield server
    server.stop()
    wait_for(lambda: not ssh_processes(), 15, "ssh processes outlived the manager")


def ssh_instance(sshd, name="e1", **options):
    return dict({"server_url": sshd.url(name), "name": f"ssh-{name}",
                 "container_prefix": PREFIX, "time_between_polls": 0.2}, **options)


@pytest.mark.timeout(180)
def test_core_jobs_over_ssh(over_ssh, tmp_path):
    with JobManager([ssh_instance(over_ssh)], start_method="spawn") as manager:
        sync = JobManagerSync(manager)
        result = sync.new_job(shell(ok_script()), {"x": 1}, timeout=60)
        assert result["result"] == "success", result
        assert result["run"]["host"] == "ssh-e1"
        # an input larger than any socket buffer: written by the waiter's writer thread
        big = b"x" * (4 << 20)
        counted = sync.new_job(shell("wc -c", protocol="raw"), big, timeout=60)
        assert counted["run"]["stdout"].strip() == str(len(big)), counted
        raw = sync.new_job(shell("cat; echo err >&2; exit 3", protocol="raw"), "hello",
                           timeout=60)
        assert raw["run"]["stdout"] == "hello" and raw["run"]["exit_code"] == 3, raw
        files = sync.new_job(shell("cat in.txt > out.txt", protocol="raw", workdir="/tmp/w",
                                   outputs=["out.txt"]), "", timeout=60,
                             files={"in.txt": "filed"})
        assert files["files"]["out.txt"] == b"filed", files
        started = time.monotonic()
        sleeper = manager.submit(shell("sleep 60"), None)
        wait_for(lambda: manager.stats()["jobs"]["running"] == 1, 60, "the job never ran")
        assert manager.kill_job(sleeper.job_id)
        killed = sleeper.result(timeout=60)
        assert killed["result"] == "killed" and time.monotonic() - started < 50
        # a few at once: more connections than one shared ssh connection's channels
        futures = [manager.submit(shell(ok_script("sleep 1; ")), i) for i in range(12)]
        assert [f.result(timeout=120)["result"] for f in futures] == ["success"] * 12


@pytest.mark.timeout(120)
def test_image_build_over_ssh(over_ssh, tmp_path):
    folder = tmp_path / "hello"
    folder.mkdir()
    (folder / "Dockerfile").write_text(
        "FROM backend-test-busybox\n"
        "CMD [\"sh\", \"-c\", \"echo '{\\\"result\\\": \\\"success\\\", \\\"text\\\": "
        "\\\"hi\\\"}'\"]\n")
    instance = ssh_instance(over_ssh, container_prefix="tssh-")
    with JobManager([instance], containers_directory=str(tmp_path),
                    start_method="spawn") as manager:
        assert manager.build_images() == {"ssh-e1": {"tssh-hello": None}}
        result = JobManagerSync(manager).new_job(Task("hello"), None, timeout=60)
        assert result["result"] == "success" and result["text"] == "hi", result
    with _docker.connect(InstanceConfig.from_dict(instance, 0)) as engine:
        engine.http.call("DELETE", engine.http.path("/images/{}", "tssh-hello"))


@pytest.mark.timeout(180)
def test_warm_starts_over_ssh(over_ssh):
    marker = shell('read line; if [ -e /tmp/used ]; then t=used; else t=fresh; fi; '
                   'touch /tmp/used; echo "{\\"result\\": \\"success\\", \\"text\\": \\"$t\\"}"')
    with JobManager([ssh_instance(over_ssh, warm_containers=1)],
                    start_method="spawn") as manager:
        sync = JobManagerSync(manager)
        pool = manager._dispatcher.warm.pool
        results = []
        for i in range(3):
            results.append(sync.new_job(marker, i, timeout=60))
            wait_for(lambda: len(pool.ready["ssh-e1"]) == 1, 60, "no warm container came")
        assert [r["text"] for r in results] == ["fresh"] * 3, results
        assert [r["run"]["warm"] for r in results] == [False, True, True]


@pytest.mark.timeout(240)
def test_engine_lost_over_ssh_and_back(own_sshd):
    over_ssh = own_sshd
    instances = [ssh_instance(over_ssh, "e1"),
                 {"server_url": over_ssh.engines["e2"], "name": "e2", "container_prefix": PREFIX,
                  "time_between_polls": 0.2, "max_concurrent_jobs": 1}]
    with JobManager(instances, start_method="spawn") as manager:
        dispatcher = manager._dispatcher
        futures = [manager.submit(shell("sleep 60"), i) for i in range(2)]
        wait_for(lambda: len(dispatcher.jobs) == 2 and all(
            job.state is JobState.RUNNING for job in dispatcher.jobs.values()), 60,
            "jobs did not start")
        [on_ssh] = [f for f in futures if dispatcher.jobs[f.job_id].engine == "ssh-e1"]
        [on_e2] = [f for f in futures if f is not on_ssh]
        manager.kill_job(on_e2.job_id)
        assert on_e2.result(timeout=60)["result"] == "killed"
        lost_at = time.monotonic()
        over_ssh.stop()  # the sshd and every session: the engine is unreachable
        result = on_ssh.result(timeout=60)
        assert result["result"] == "crash" and result["run"]["reason"] == "engine_lost", result
        assert time.monotonic() - lost_at < 30
        wait_for(lambda: not dispatcher.placement.is_reachable("ssh-e1"), 30, "not marked down")
        placed = manager.submit(shell(ok_script()), 3).result(timeout=60)
        assert placed["result"] == "success" and placed["run"]["host"] == "e2"
        over_ssh.start()
        wait_for(lambda: dispatcher.placement.is_reachable("ssh-e1"), 60, "not marked up again")
        later = [manager.submit(shell(ok_script("sleep 2; ")), i) for i in range(2)]
        assert {f.result(timeout=60)["run"]["host"] for f in later} == {"ssh-e1", "e2"}


@pytest.mark.parametrize("alias, expected", [
    ("badhost", "ssh: Host key verification failed."),
    ("refused", "ssh: root@127.0.0.1: Permission denied (publickey)."),
    ("nodocker", "docker: not found"),
])
def test_ssh_errors_are_one_clear_line(over_ssh, alias, expected):
    config = InstanceConfig.from_dict({"server_url": over_ssh.url(alias)}, 0)
    started = time.monotonic()
    with pytest.raises(_docker.DockerFailure) as failure:
        _docker.connect(config, timeout=20)
    assert time.monotonic() - started < 15
    assert failure.value.reason == "engine_unreachable"
    assert expected in failure.value.text and "\n" not in failure.value.text, failure.value.text


@pytest.mark.timeout(120)
def test_from_env_and_the_command_line_with_docker_host_over_ssh(over_ssh, monkeypatch,
                                                                   capsys):
    from backend import cli

    monkeypatch.setenv("DOCKER_HOST", over_ssh.url("e1"))
    with JobManager.from_env(instance={"container_prefix": PREFIX},
                             start_method="spawn") as manager:
        result = JobManagerSync(manager).new_job(shell(ok_script()), 1, timeout=60)
        assert result["result"] == "success" and result["run"]["host"] == over_ssh.url("e1")
    assert cli.main(["hosts"]) == 0
    out = capsys.readouterr().out
    assert over_ssh.url("e1") in out and "DOCKER_HOST" in out and "yes" in out, out
