"""A remote engine over verified TLS on loopback (docs/engines.rst, remote engines over TLS):
certificates made by the test."""
import socket
import time

import pytest

from backend import JobManager, JobManagerSync
from helpers import PREFIX, ROOT, IMAGE, ok_script, shell
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
