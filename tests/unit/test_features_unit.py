"""backend.docker._features without an engine: the version negotiation and the detection."""
import pytest

from backend.docker import _actions, _definition, _features
from backend.docker._streams import DockerFailure
from backend.model._config import parse_instances
from backend.model._job import JobSpec
from backend.model._task import Task, snapshot_task
from backend.docker._features import (EngineKind, UnsupportedEngine, detect, negotiate,
                                      unreported_oom)

DOCKER20 = {"Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12"}
DOCKER28 = {"Version": "28.5.2", "ApiVersion": "1.51", "MinAPIVersion": "1.44"}
PODMAN = {"Version": "4.3.1", "ApiVersion": "1.41", "MinAPIVersion": "1.24",
          "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]}
#: overlay2 on XFS: the engine may give a storage quota
DOCKER_INFO = {"Plugins": {"Log": ["json-file", "local"]}, "InitBinary": "docker-init",
               "Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "xfs"],
                                                      ["Supports d_type", "true"]]}
#: overlay2 on ext4: it refuses one
DOCKER_EXT4_INFO = dict(DOCKER_INFO, DriverStatus=[["Backing Filesystem", "extfs"]])
PODMAN_INFO = {"Plugins": {"Log": ["k8s-file", "none", "passthrough", "journald"]},
               "InitBinary": "", "Driver": "overlay",
               "DriverStatus": [["Backing Filesystem", "extfs"]]}
#: what Docker 20.10, 28.5 and Podman 4.3 answer to a StorageOpt size on overlay over ext4
REFUSAL = "--storage-opt is supported only for overlay over xfs with 'pquota' mount option"


@pytest.mark.parametrize("version, expected", [
    (DOCKER20, "1.41"), (DOCKER28, "1.51"), (PODMAN, "1.41"),
    ({"ApiVersion": "1.52", "MinAPIVersion": "1.44"}, _features.MAX_API_VERSION),
])
def test_negotiate_speaks_the_newest_common_version(version, expected):
    assert negotiate(version) == expected


@pytest.mark.parametrize("version", [{"ApiVersion": "1.40", "MinAPIVersion": "1.12"},
                                     {"ApiVersion": "1.60", "MinAPIVersion": "1.55"}])
def test_an_engine_outside_our_range_is_one_clear_line(version):
    with pytest.raises(UnsupportedEngine) as caught:
        negotiate(version, "e9")
    text = str(caught.value)
    assert "\n" not in text and "e9" in text and version["ApiVersion"] in text
    assert _features.MIN_API_VERSION in text and _features.MAX_API_VERSION in text


def test_docker_has_no_fallback():
    features = detect(DOCKER28, DOCKER_INFO, "1.51", "d1")
    assert (features.kind, features.log_driver, features.init, features.nproc) == (
        EngineKind.DOCKER, "local", True, None)
    assert features.reports_oom and features.no_network_mode == "default"
    assert features.storage_quota
    assert features.fallbacks == ()


def test_podman_fallbacks():
    features = detect(PODMAN, PODMAN_INFO, "1.41", "p1")
    assert features.kind is EngineKind.PODMAN
    assert (features.log_driver, features.log_options) == ("k8s-file", ("max-size",))
    assert features.init and features.nproc == (_features.PODMAN_NPROC,) * 2
    assert features.no_network_mode == "none" and not features.reports_oom
    assert not features.storage_quota
    assert len(features.fallbacks) == 4 and all("p1" in line for line in features.fallbacks)


@pytest.mark.parametrize("info", [
    DOCKER_EXT4_INFO, dict(DOCKER_INFO, Driver="vfs"), {}, dict(DOCKER_INFO, DriverStatus=None),
    dict(DOCKER_INFO, DriverStatus=[["Backing Filesystem"], "xfs", 3]),
    dict(DOCKER_INFO, DriverStatus=[["Backing Filesystem", ["xfs"]]]),
], ids=["ext4", "vfs", "no driver", "no status", "odd status", "odd pair"])
def test_no_storage_quota_but_on_overlay_over_xfs(info):
    features = detect(DOCKER28, info, "1.51", "d1")
    assert not features.storage_quota
    assert [line for line in features.fallbacks if "storage quota" in line], features.fallbacks


def test_a_refused_quota_is_told_and_forgotten_once(caplog):
    assert _features.refuses_quota(f"host d1 refused the container: {REFUSAL}")
    assert not _features.refuses_quota("host d1 refused the container: invalid mount config")
    assert not _features.refuses_quota("host d1 refused the container: invalid CPU quota")
    features = detect(DOCKER28, DOCKER_INFO, "1.51", "d-refuses")
    with caplog.at_level("INFO", logger="backend"):
        for _ in range(2):
            forgotten = _features.without_quota(features, "d-refuses", "unix:///d-refuses",
                                                REFUSAL)
    assert features.storage_quota and not forgotten.storage_quota
    assert forgotten.log_driver == features.log_driver
    assert len(caplog.records) == 1 and "refused a storage quota" in caplog.text


def test_unreported_oom_only_where_the_engine_does_not_say_it():
    podman = detect(PODMAN, PODMAN_INFO, "1.41")
    docker = detect(DOCKER20, DOCKER_INFO, "1.41")
    killed = {"ExitCode": 137, "OOMKilled": False}
    assert unreported_oom(podman, killed, killed_from_outside=False)
    assert not unreported_oom(podman, killed, killed_from_outside=True)
    assert not unreported_oom(podman, {"ExitCode": 1}, killed_from_outside=False)
    assert not unreported_oom(docker, killed, killed_from_outside=False)
    assert not unreported_oom(None, killed, killed_from_outside=False)


def test_each_fallback_is_logged_once(caplog):
    features = detect(PODMAN, PODMAN_INFO, "1.41", "p-once")
    with caplog.at_level("INFO", logger="backend"):
        _features.log_fallbacks(features, "unix:///p-once")
        _features.log_fallbacks(features, "unix:///p-once")
    assert len(caplog.records) == len(features.fallbacks)


def _spec(disk):
    return JobSpec("j", snapshot_task(Task("image", command=["x"], limits={"disk": disk}),
                                      None), b"")


(_CONFIG,) = parse_instances([{"server_url": "unix:///d.sock", "name": "d"}])


@pytest.mark.parametrize("disk", [1, 64 << 20, 1 << 30])
def test_a_quota_engine_gives_each_container_its_disk_limit_and_a_margin(disk):
    quota = detect(DOCKER28, DOCKER_INFO, "1.51", "d")
    options = _definition.container_options(_spec(disk), _CONFIG, "m", "o", quota)
    size = int(options["HostConfig"]["StorageOpt"]["size"])
    assert size == _definition.quota_size(disk) and size > disk
    assert size >= _definition.QUOTA_MIN
    assert size <= max(_definition.QUOTA_MIN, disk * 1.1 + _definition.QUOTA_MARGIN_MIN)
    watch = detect(DOCKER28, DOCKER_EXT4_INFO, "1.51", "d")
    assert "StorageOpt" not in _definition.container_options(_spec(disk), _CONFIG, "m", "o",
                                                             watch)["HostConfig"]


class RefusingEngine:
    """An engine that refuses every create with ``StorageOpt`` (as overlay on ext4 does)."""

    def __init__(self, refusal=REFUSAL):
        self.config, self.refusal, self.created = _CONFIG, refusal, []
        self.features = detect(DOCKER28, DOCKER_INFO, "1.51", "d")

    def create(self, options, name):
        if "StorageOpt" in options["HostConfig"]:
            raise DockerFailure("start_failed", f"host d refused the container: {self.refusal}")
        self.created.append((name, options))
        return "c1"


def test_an_engine_that_refuses_the_quota_gets_the_job_without_it():
    engine = RefusingEngine()
    for job in ("j1", "j2"):
        options = _definition.container_options(_spec(1 << 20), _CONFIG, "m", "o",
                                                engine.features)
        assert _actions._create(engine, options, job) == "c1"
    assert [name for name, _ in engine.created] == ["j1", "j2"]
    assert not engine.features.storage_quota
    assert all("StorageOpt" not in options["HostConfig"] for _, options in engine.created)


def test_another_refusal_is_the_jobs():
    engine = RefusingEngine("invalid mount config for type bind")
    options = _definition.container_options(_spec(1 << 20), _CONFIG, "m", "o", engine.features)
    with pytest.raises(DockerFailure):
        _actions._create(engine, options, "j1")
    assert engine.features.storage_quota and not engine.created
