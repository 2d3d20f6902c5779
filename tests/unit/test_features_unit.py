"""backend.docker._features without an engine: the version negotiation and the detection."""
import pytest

from backend.docker import _features
from backend.docker._features import (EngineKind, UnsupportedEngine, detect, negotiate,
                                      unreported_oom)

DOCKER20 = {"Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12"}
DOCKER28 = {"Version": "28.5.2", "ApiVersion": "1.51", "MinAPIVersion": "1.44"}
PODMAN = {"Version": "4.3.1", "ApiVersion": "1.41", "MinAPIVersion": "1.24",
          "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]}
DOCKER_INFO = {"Plugins": {"Log": ["json-file", "local"]}, "InitBinary": "docker-init"}
PODMAN_INFO = {"Plugins": {"Log": ["k8s-file", "none", "passthrough", "journald"]},
               "InitBinary": ""}


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
    assert features.fallbacks == ()


def test_podman_fallbacks():
    features = detect(PODMAN, PODMAN_INFO, "1.41", "p1")
    assert features.kind is EngineKind.PODMAN
    assert (features.log_driver, features.log_options) == ("k8s-file", ("max-size",))
    assert features.init and features.nproc == (_features.PODMAN_NPROC,) * 2
    assert features.no_network_mode == "none" and not features.reports_oom
    assert len(features.fallbacks) == 3 and all("p1" in line for line in features.fallbacks)


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
