"""A remote engine over verified TLS on loopback (docs/engines.rst, remote engines over TLS):
certificates made by the test.

Warm starts over TLS too: no attach is kept (it could not be passed between processes), the
job's submitter attaches when it takes a warm container, and every warm-served result is
compared with the same job run cold by the same manager (the first job of a shape runs cold,
the next one is served warm)."""
import hashlib
import os
import socket
import time

import pytest

from backend import JobManager, JobManagerSync, Task
from helpers import (PREFIX, ROOT, IMAGE, api_client, comparable, killed_while_served_warm,
                     ok_script, our_containers, shell, wait_for, warm_ready)
from engines import PrivateEngine, build_busybox_image, make_certificates


@pytest.fixture(scope="module")
def tls_engine(tmp_path_factory, engines):
    folder = tmp_path_factory.mktemp("tls")
    make_certificates(folder, ("ca", "other-ca"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = PrivateEngine("tls", ROOT / "tls", tcp_port=port, tls={
        "ca_cert": str(folder / "ca.pem"), "server_cert": str(folder / "server.pem"),
        "server_key": str(folder / "server-key.pem")})
    engine.start()
    build_busybox_image(engine.url, PREFIX + IMAGE)
    yield engine, folder
    engine.stop()


def _instance(engine, folder, ca="ca.pem", client=True):
    tls = {"ca_cert": str(folder / ca), "verify": True}
    if client:
        tls.update(client_cert=str(folder / "client.pem"), client_key=str(folder / "client-key.pem"))
    return {"server_url": engine.tcp_url, "name": "remote", "container_prefix": PREFIX,
            "tls": tls}


def test_job_over_verified_tls(tls_engine, monkeypatch):
    engine, folder = tls_engine
    # requests would let these win over the given CA: they must not
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    with JobManager([_instance(engine, folder)]) as manager:
        result = JobManagerSync(manager).new_job(shell(ok_script()), 1, timeout=60)
    assert result["result"] == "success" and result["run"]["host"] == "remote"


@pytest.mark.parametrize("ca, client", [("other-ca.pem", True), ("ca.pem", False)])
def test_wrong_ca_or_no_client_certificate_is_unreachable(tls_engine, ca, client):
    engine, folder = tls_engine
    with JobManager([_instance(engine, folder, ca, client)]) as manager:
        result = JobManagerSync(manager).new_job(shell(ok_script()), 1, timeout=60)
    assert result["result"] == "crash" and result["run"]["reason"] == "engine_unreachable"
    assert "TLS" in result["text"] or "SSL" in result["text"]


def test_a_job_ignoring_a_big_input_over_tls_holds_no_submitter(tls_engine):
    # over TLS the submitter writes the input from a thread of its own: its one process is
    # free for the next job at once, and the write stops when the container has ended
    engine, folder = tls_engine
    ignores = shell("echo '{\"result\": \"success\"}'", limits={"time": 2})
    with JobManager([_instance(engine, folder)], process_pool_size=1) as manager:
        start = time.monotonic()
        bad = manager.submit(ignores, "x" * 4_000_000)
        normal = manager.submit(shell(ok_script()), 1).result(30)
        result = bad.result(30)
        seconds = time.monotonic() - start
    assert normal["result"] == "success", normal
    assert (result["result"], result["run"]["reason"]) == ("success", None), result
    assert seconds < 5, seconds


# -- warm starts over TLS ------------------------------------------------------------------

@pytest.fixture
def tls_warm(tls_engine):
    """``(engine, manager, sync)``: a manager with one warm container on the TLS engine."""
    engine, folder = tls_engine
    instance = dict(_instance(engine, folder), warm_containers=1, time_between_polls=0.2)
    with JobManager([instance]) as manager:
        yield engine, manager, JobManagerSync(manager)


def same_cold_and_warm(tls_warm, task, inputdata=None, files=None):
    """Runs the job cold, then served warm; asserts both results are the same but for what
    differs between runs; returns the warm one."""
    _, manager, sync = tls_warm
    cold = sync.new_job(task, inputdata, timeout=60, files=files)
    warm_ready(manager, "remote", task, files)
    served = sync.new_job(task, inputdata, timeout=60, files=files)
    assert cold["run"]["warm"] is False and served["run"]["warm"] is True, (cold, served)
    assert comparable(served) == comparable(cold)
    assert manager._dispatcher.warm.pool.hits["remote"] >= 1
    return served


def raw(script, **options):
    return shell(script, protocol="raw", **options)


def test_a_json_job_served_warm_over_tls(tls_warm):
    task = shell('read line; if [ -e /tmp/used ]; then t=used; else t=fresh; fi; '
                 'touch /tmp/used; echo "{\\"result\\": \\"success\\", \\"text\\": \\"$t\\"}"')
    served = same_cold_and_warm(tls_warm, task, 1)
    assert (served["result"], served["text"]) == ("success", "fresh")


def test_over_tls_a_warm_jobs_clock_starts_with_its_input(tls_warm):
    """A JSON program that boots 1 s before reading its input: served warm, the boot is done
    (the program runs ungated: only its stdin waits)."""
    engine, manager, sync = tls_warm
    booting = shell('sleep 1; read line; echo "{\\"result\\": \\"success\\"}"')
    cold = sync.new_job(booting, 1, timeout=60)
    warm_ready(manager, "remote", booting)
    container = manager._dispatcher.warm.pool.ready["remote"][0]
    with api_client(engine.url) as client:  # the boot has no event to wait for
        wait_for(lambda: not any(p[-1].startswith("sleep") for p in
                                 client.top(container.container_id)["Processes"]),
                 10, "the warm container did not boot")
    warm = sync.new_job(booting, 2, timeout=60)
    assert cold["run"]["warm"] is False and cold["run"]["duration"] >= 1.0, cold
    assert warm["run"]["warm"] is True and warm["run"]["duration"] < 1.0, warm


def test_a_raw_job_with_files_served_warm_over_tls(tls_warm):
    task = raw("cat; ls; cat a.txt sub/b.txt; echo made > out.txt; echo err >&2; exit 3",
               outputs=["out.txt"])
    served = same_cold_and_warm(tls_warm, task, "in\n", {"a.txt": "A\n", "sub/b.txt": b"B\n"})
    assert served["run"]["stdout"] == "in\na.txt\nsub\nA\nB\n", served
    assert (served["run"]["stderr"], served["run"]["exit_code"]) == ("err\n", 3)
    assert served["files"] == {"out.txt": b"made\n"}


def test_over_tls_each_warm_job_sees_only_its_own_files(tls_warm):
    _, manager, sync = tls_warm
    task = raw("ls; cat a.txt; echo left > left.txt")
    results = []
    for files in ({"a.txt": "one"}, {"a.txt": "two", "b": ""}, {"a.txt": "three"}):
        results.append(sync.new_job(task, None, timeout=60, files=files))
        warm_ready(manager, "remote")
    assert [r["run"]["warm"] for r in results] == [False, True, True]
    assert [r["run"]["stdout"] for r in results] == ["a.txt\none", "a.txt\nb\ntwo",
                                                     "a.txt\nthree"]


@pytest.mark.parametrize("data", [b"", os.urandom(1 << 20)], ids=["empty", "1MB"])
def test_over_tls_a_warm_jobs_stdin_is_exact(tls_warm, data):
    served = same_cold_and_warm(tls_warm, raw("cat > /in; wc -c < /in; md5sum < /in"), data)
    assert served["run"]["stdout"] == f"{len(data)}\n{hashlib.md5(data).hexdigest()}  -\n"


@pytest.mark.parametrize("task, files, how", [
    (shell('read line; echo "{\\"result\\": \\"success\\"}"'), None, "killed"),
    (raw("cat; cat f"), {"f": "F"}, "killed"),
    (raw("cat; cat f"), {"f": "F"}, "removed")], ids=["json", "raw-with-files", "removed"])
def test_over_tls_a_warm_container_killed_before_use_serves_its_job_cold(tls_warm, task,
                                                                          files, how):
    engine, manager, sync = tls_warm
    cold = sync.new_job(task, "in\n", timeout=60, files=files)
    warm_ready(manager, "remote", task, files)
    container = manager._dispatcher.warm.pool.ready["remote"][0].container_id
    with api_client(engine.url) as client:
        if how == "removed":
            client.remove_container(container, force=True)
        else:
            client.kill(container)
            client.wait(container, timeout=30)
    after = sync.new_job(task, "in\n", timeout=60, files=files)
    assert after["run"]["warm"] is False and after["run"]["container_id"] != container
    assert comparable(after) == comparable(cold) and after["result"] == "success", after
    assert manager._dispatcher.warm.pool.hits["remote"] == 0
    wait_for(lambda: container not in [c["Id"] for c in our_containers([engine])], 30,
             "the dead warm container was not removed")


@pytest.mark.parametrize("files", [None, {"a": "a"}], ids=["raw", "files"])
def test_kill_of_a_warm_served_job_over_tls(tls_warm, files):
    _, manager, _ = tls_warm
    result = killed_while_served_warm(manager, "remote", files, hard_time=2)
    assert (result["result"], result["run"]["reason"], result["run"]["warm"]) == (
        "killed", "killed", True)
