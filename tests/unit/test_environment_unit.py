"""The engine the docker CLI would use (backend.model._environment, docs/engines.rst): each rule,
against an environment and a configuration folder made in a temporary folder. No Docker."""
import hashlib
import json

import pytest

from backend import JobManager
from backend.model._environment import DEFAULT_URL, resolve


def _context(folder, name, host, skip_verify=False, tls_files=()):
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = folder / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps(
        {"Name": name, "Metadata": {}, "Endpoints": {"docker": {
            "Host": host, "SkipTLSVerify": skip_verify}}}))
    if tls_files:
        tls = folder / "contexts" / "tls" / digest / "docker"
        tls.mkdir(parents=True)
        for file_name in tls_files:
            (tls / file_name).write_text("pem")
    return folder / "contexts" / "tls" / digest / "docker"


def test_nothing_set_is_the_local_socket(tmp_path):
    engine = resolve({"HOME": str(tmp_path)})
    assert engine == ({"server_url": DEFAULT_URL}, "default socket")


def test_docker_host_alone(tmp_path):
    engine = resolve({"HOME": str(tmp_path), "DOCKER_HOST": "ssh://grader@host"})
    assert engine == ({"server_url": "ssh://grader@host"}, "DOCKER_HOST")


def test_docker_host_with_tls_verify_and_cert_path(tmp_path):
    for file_name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / file_name).write_text("pem")
    engine = resolve({"HOME": "/nonexistent", "DOCKER_HOST": "tcp://10.0.0.5:2376",
                      "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)})
    assert engine.source == "DOCKER_HOST"
    assert engine.instance == {"server_url": "tcp://10.0.0.5:2376", "tls": {
        "ca_cert": str(tmp_path / "ca.pem"), "client_cert": str(tmp_path / "cert.pem"),
        "client_key": str(tmp_path / "key.pem"), "verify": True}}


def test_tls_files_default_to_the_config_folder_and_the_port_to_the_cli_s(tmp_path):
    (tmp_path / "ca.pem").write_text("pem")
    (tmp_path / "cert.pem").write_text("pem")  # no key.pem: no client certificate
    engine = resolve({"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "tcp://build-host",
                      "DOCKER_TLS_VERIFY": "1"})
    assert engine.instance == {"server_url": "tcp://build-host:2376",
                               "tls": {"ca_cert": str(tmp_path / "ca.pem"), "verify": True}}
    plain = resolve({"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "tcp://build-host"})
    assert plain.instance == {"server_url": "tcp://build-host:2375"}
    unverified = resolve({"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "tcp://h:1",
                          "DOCKER_TLS": "1"})
    assert unverified.instance["tls"]["verify"] is False
    empty = resolve({"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "tcp://h:1",
                     "DOCKER_TLS_VERIFY": ""})  # empty: not set, as for the docker CLI
    assert "tls" not in empty.instance


def test_docker_host_wins_over_the_context(tmp_path):
    _context(tmp_path, "remote", "ssh://other")
    engine = resolve({"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "unix:///x.sock",
                      "DOCKER_CONTEXT": "remote"})
    assert engine == ({"server_url": "unix:///x.sock"}, "DOCKER_HOST")


def test_current_context_of_config_json(tmp_path):
    _context(tmp_path, "graders", "ssh://grader@10.0.0.7:2222")
    (tmp_path / "config.json").write_text(json.dumps({"auths": {},
                                                      "currentContext": "graders"}))
    engine = resolve({"DOCKER_CONFIG": str(tmp_path)})
    assert engine == ({"server_url": "ssh://grader@10.0.0.7:2222"}, "context graders")


def test_config_json_under_home_by_default(tmp_path):
    folder = tmp_path / ".docker"
    _context(folder, "graders", "ssh://grader@host")
    (folder / "config.json").write_text(json.dumps({"currentContext": "graders"}))
    assert resolve({"HOME": str(tmp_path)}).source == "context graders"


def test_docker_context_wins_over_config_json(tmp_path):
    _context(tmp_path, "a", "unix:///a.sock")
    _context(tmp_path, "b", "unix:///b.sock")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "a"}))
    engine = resolve({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "b"})
    assert engine == ({"server_url": "unix:///b.sock"}, "context b")


def test_the_default_context_is_the_local_socket(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "default"}))
    assert resolve({"DOCKER_CONFIG": str(tmp_path)}).source == "default socket"
    assert resolve({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "default"}) == \
        ({"server_url": DEFAULT_URL}, "default socket")


def test_context_with_tls_material(tmp_path):
    tls = _context(tmp_path, "secure", "tcp://10.0.0.9:2376",
                   tls_files=("ca.pem", "cert.pem", "key.pem"))
    engine = resolve({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "secure"})
    assert engine.instance == {"server_url": "tcp://10.0.0.9:2376", "tls": {
        "ca_cert": str(tls / "ca.pem"), "client_cert": str(tls / "cert.pem"),
        "client_key": str(tls / "key.pem"), "verify": True}}
    _context(tmp_path, "loose", "tcp://10.0.0.9:2376", skip_verify=True)
    loose = resolve({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "loose"})
    assert loose.instance["tls"] == {"verify": False}


@pytest.mark.parametrize("setup, message", [
    (lambda folder: None, "docker context 'nowhere' not found"),
    (lambda folder: _context(folder, "nowhere", ""), "no docker endpoint"),
])
def test_a_missing_or_broken_context_is_one_clear_error(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(ValueError, match=message):
        resolve({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "nowhere"})


def test_config_json_that_is_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json: not JSON"):
        resolve({"DOCKER_CONFIG": str(tmp_path)})


def test_from_env_refuses_docker_instances():
    with pytest.raises(TypeError, match="docker_instances"):
        JobManager.from_env(docker_instances=[])


def test_from_env_raises_for_a_missing_context(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("DOCKER_CONTEXT", "gone")
    with pytest.raises(ValueError, match="'gone' not found"):
        JobManager.from_env()
