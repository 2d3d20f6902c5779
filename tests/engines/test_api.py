"""The public surface: names, validation of tasks, limits and configuration (no engine)."""
import json

import pytest

import backend
from backend import JobManager, LocalCheck, Task
from backend.model._config import parse_instances
from backend.model._task import DEFAULT_LIMITS, merge_limits

DUMMY = [{"server_url": "unix:///nonexistent/docker.sock", "name": "nowhere"}]


def test_public_names():
    assert set(backend.__all__) == {"JobManager", "JobManagerSync", "JobManagerBuffer", "Task",
                                    "LocalCheck", "DEFAULT_LIMITS"}
    for name in backend.__all__:
        assert getattr(backend, name) is not None


def test_limits_merge_over_defaults():
    merged = merge_limits({"time": 2})
    assert merged["time"] == 2 and merged["hard_time"] == 6
    assert merged["memory"] == DEFAULT_LIMITS["memory"]
    assert merge_limits({"time": 2, "hard_time": 3})["hard_time"] == 3


@pytest.mark.parametrize("limits, message", [
    ({"time": -1}, "positive"), ({"time": 0}, "positive"), ({"memory": "lots"}, "number"),
    ({"output": 1.5}, "whole"), ({"cpus": True}, "number"), ({"speed": 1}, "unknown limit"),
    ({"time": float("nan")}, "number"), ({"memory": 2}, "at least"),
    ({"disk": 0}, "positive"), ({"disk": 1.5}, "whole"), ({"disk": "1G"}, "number"),
])
def test_bad_limits_raise(limits, message):
    with pytest.raises(ValueError, match=message):
        Task("busybox", limits=limits)


def test_local_check_validates():
    with pytest.raises(ValueError):
        LocalCheck("maybe")
    assert LocalCheck().need_container


def test_default_check_answer():
    assert Task("img").check_answer(1) == LocalCheck("success", need_container=True)
    assert Task().check_answer(1).need_container is False


@pytest.mark.parametrize("instances, message", [
    ([], "empty"), ("unix:///x", "list"), ([{"name": "a"}], "server_url"),
    ([{"server_url": "unix:///x", "colour": 1}], "colour"),
    ([{"server_url": "unix:///x", "waiters": "2"}], "waiters"),
    ([{"server_url": "unix:///x", "max_concurrent_jobs": 1.5}], "max_concurrent_jobs"),
    ([{"server_url": "unix:///x", "build_containers_on_start": 1}], "build_containers_on_start"),
    ([{"server_url": "unix:///x", "waiters": 0}], "waiters"),
    ([{"server_url": "unix:///x", "tls": {"ca_cert": "/nonexistent.pem"}}], "/nonexistent.pem"),
    ([{"server_url": "unix:///x", "tls": {"ca": "x"}}], "tls.ca"),
    ([{"server_url": "/var/run/docker.sock"}], "server_url"),
    ([{"server_url": "ssh://user@host/path"}], "no path"),
    ([{"server_url": "ssh://host", "tls": {"verify": False}}], "ssh encrypts"),
    ([{"server_url": "tcp://127.0.0.1"}], "port"),
    ([{"server_url": "unix:///x"}, {"server_url": "unix:///x"}], "duplicate"),
])
def test_bad_instances_raise(instances, message):
    with pytest.raises(ValueError, match=message):
        parse_instances(instances)
    with pytest.raises(ValueError, match=message):
        JobManager(instances)


def test_instance_defaults():
    [instance] = parse_instances([{"server_url": "unix:///x"}])
    assert instance.name == "unix:///x"
    assert (instance.waiters, instance.time_between_polls, instance.max_concurrent_jobs) == \
        (1, 0.5, 100)
    assert instance.container_prefix == "" and instance.tls is None


def test_plain_remote_tcp_warns(caplog):
    parse_instances([{"server_url": "tcp://127.0.0.1:2375"}])
    assert "without TLS" not in caplog.text
    parse_instances([{"server_url": "tcp://192.0.2.7:2375"}])
    assert "without TLS" in caplog.text and "root" in caplog.text


@pytest.mark.parametrize("arguments, message", [
    ({"callback_manager_count": 0}, "callback_manager_count"),
    ({"process_pool_size": "4"}, "process_pool_size"),
    ({"max_queued_jobs": -1}, "max_queued_jobs"),
    ({"tasks_directory": "/nonexistent"}, "tasks_directory"),
    ({"start_method": "fork"}, "start_method"),
])
def test_bad_manager_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        JobManager(DUMMY, **arguments)


def test_from_config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"docker_instances": DUMMY, "callback_managers_threads": 2,
                                "submitters_processes": 1}))
    with JobManager.from_config(str(path)) as manager:
        assert len(manager._callback_managers) == 2
        assert manager._dispatcher.pool_size == 1
    with pytest.raises(ValueError, match="'colour'"):
        JobManager.from_config({"docker_instances": DUMMY, "colour": "red"})
    with pytest.raises(ValueError, match="docker_instances"):
        JobManager.from_config({})


def test_bad_jobs_raise_and_create_nothing(tmp_path):
    calls = []
    with JobManager(DUMMY, tasks_directory=str(tmp_path)) as manager:
        with pytest.raises(TypeError, match="JSON"):
            manager.new_job(Task("img"), {"a": object()}, lambda *a: calls.append(a))
        with pytest.raises(TypeError, match="JSON"):
            manager.new_job(Task("img"), float("nan"), lambda *a: calls.append(a))
        with pytest.raises(TypeError, match="task"):
            manager.new_job("not a task", 1, lambda *a: calls.append(a))
        with pytest.raises(TypeError, match="callable"):
            manager.new_job(Task("img"), 1, "not callable")
        with pytest.raises(ValueError, match="does not exist"):
            manager.new_job(Task("img", directory="missing"), 1, lambda *a: calls.append(a))
        with pytest.raises(ValueError, match="expose"):
            manager.new_job(Task("img", directory="/"), 1, lambda *a: calls.append(a))
        with pytest.raises(TypeError, match="command"):
            manager.new_job(Task("img", command="ls -l"), 1, lambda *a: calls.append(a))

        class Odd:
            environment = "img"
            limits = {"time": -3}

            def check_answer(self, inputdata):
                return LocalCheck()
        with pytest.raises(ValueError, match="time"):
            manager.new_job(Odd(), 1, lambda *a: calls.append(a))
        assert manager.get_waiting_jobs_count() == 0
    assert calls == []


def test_new_job_after_close_raises():
    manager = JobManager(DUMMY)
    manager.close()
    manager.close()  # a no-op the second time
    with pytest.raises(RuntimeError, match="closed"):
        manager.new_job(Task(), 1, lambda *a: None)


def test_get_container_names(tmp_path):
    for name in ("grader", "python"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "README").write_text("")
    with JobManager(DUMMY, containers_directory=str(tmp_path)) as manager:
        assert manager.get_container_names() == ["grader", "python"]
