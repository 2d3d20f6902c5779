"""Images of containers_directory (docs/engines.rst, images): built on start or on demand;
errors logged."""
import logging

import docker

from backend import JobManager, JobManagerSync, Task


def _images(tmp_path):
    good = tmp_path / "hello"
    good.mkdir()
    (good / "Dockerfile").write_text(
        "FROM backend-test-busybox\n"
        "CMD [\"sh\", \"-c\", \"echo '{\\\"result\\\": \\\"success\\\", \\\"text\\\": \\\"hello\\\"}'\"]\n")
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "Dockerfile").write_text("FROM backend-test-busybox\nRUN exit 7\n")
    return str(tmp_path)


def test_build_on_start_and_errors_logged(engines, tmp_path, caplog):
    instances = [{"server_url": engines[0].url, "name": "e1", "container_prefix": "t8-",
                  "build_containers_on_start": True}]
    caplog.set_level(logging.INFO, logger="backend")
    with JobManager(instances, containers_directory=_images(tmp_path)) as manager:
        assert manager.get_container_names() == ["broken", "hello"]
        assert "t8-broken" in caplog.text and "exit" in caplog.text  # the engine's message
        result = JobManagerSync(manager).new_job(Task("hello"), None, timeout=30)
        assert result["result"] == "success" and result["text"] == "hello"
    with docker.APIClient(base_url=engines[0].url, version="1.41") as client:
        client.remove_image("t8-hello")


def test_build_images_on_demand(engines, tmp_path):
    instances = [{"server_url": e.url, "name": e.name, "container_prefix": "t9-"}
                 for e in engines]
    with JobManager(instances, containers_directory=_images(tmp_path)) as manager:
        report = manager.build_images()
    assert set(report) == {"e1", "e2"}
    for tags in report.values():
        assert tags["t9-hello"] is None and tags["t9-broken"]
    for engine in engines:
        with docker.APIClient(base_url=engine.url, version="1.41") as client:
            client.remove_image("t9-hello")
