"""Validated configuration: docker instances (docs/configuration.rst) and the ``from_config`` file format."""
from __future__ import annotations

import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote, urlparse

logger = logging.getLogger("backend")

_INSTANCE_KEYS: Dict[str, Tuple[type, ...]] = {
    "server_url": (str,),
    "name": (str,),
    "tls": (dict,),
    "container_prefix": (str,),
    "waiters": (int,),
    "time_between_polls": (int, float),
    "max_concurrent_jobs": (int,),
    "build_containers_on_start": (bool,),
    "runtime": (str,),
    "warm_containers": (int,),
    "warm_idle": (int, float),
}
_TLS_KEYS = {"ca_cert", "client_cert", "client_key", "verify"}

#: Keys of a ``JobManager.from_config`` file, and the constructor argument each one feeds.
CONFIG_KEYS = {
    "docker_instances": "docker_instances",
    "containers_directory": "containers_directory",
    "tasks_directory": "tasks_directory",
    "callback_managers_threads": "callback_manager_count",
    "submitters_processes": "process_pool_size",
    "max_queued_jobs": "max_queued_jobs",
}


@dataclass(frozen=True)
class InstanceConfig:
    """One Docker engine, validated (docs/configuration.rst). Picklable: it is sent to every child process."""

    server_url: str
    name: str
    tls: Optional[Dict[str, Any]] = None
    container_prefix: str = ""
    waiters: int = 1
    time_between_polls: float = 0.5
    max_concurrent_jobs: int = 100
    build_containers_on_start: bool = False
    runtime: Optional[str] = None
    warm_containers: int = 0  # docs/performance.rst, warm starts: 0 = off
    warm_idle: float = 60.0

    @classmethod
    def from_dict(cls, raw: Any, index: int) -> "InstanceConfig":
        """Builds and validates one instance from its dict.

        Raises:
            ValueError: an unknown key, a missing ``server_url``, a value of the wrong type,
                or a TLS file that does not exist; the message names the key.
        """
        where = f"docker_instances[{index}]"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where} must be a dict, not {type(raw).__name__}")
        for key, value in raw.items():
            if key not in _INSTANCE_KEYS:
                raise ValueError(f"{where}: unknown key {key!r}; known keys: "
                                 f"{', '.join(_INSTANCE_KEYS)}")
            types = _INSTANCE_KEYS[key]
            if key == "runtime" and value is None:
                continue
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise ValueError(f"{where}: key {key!r} must be of type "
                                 f"{' or '.join(t.__name__ for t in types)}, not {value!r}")
        if "server_url" not in raw:
            raise ValueError(f"{where}: missing key 'server_url'")
        url = raw["server_url"]
        scheme = urlparse(url).scheme
        if scheme not in ("unix", "tcp", "http", "https", "ssh"):
            raise ValueError(f"{where}: key 'server_url' must be like "
                             f"unix:///var/run/docker.sock, tcp://host:2376 or ssh://user@host, "
                             f"not {url!r}")
        if scheme == "ssh":
            try:
                parse_ssh_url(url)
            except ValueError as error:
                raise ValueError(f"{where}: key 'server_url': {error}") from None
            if raw.get("tls") is not None:
                raise ValueError(f"{where}: key 'tls' does not go with an ssh:// server_url "
                                 f"(ssh encrypts and authenticates)")
        elif scheme != "unix" and not (urlparse(url).hostname and _port(url)):
            raise ValueError(f"{where}: key 'server_url' {url!r} needs a host and a port")
        if raw.get("waiters", 1) < 1:
            raise ValueError(f"{where}: key 'waiters' must be at least 1")
        if raw.get("time_between_polls", 0.5) <= 0:
            raise ValueError(f"{where}: key 'time_between_polls' must be positive")
        if raw.get("max_concurrent_jobs", 100) < 0:
            raise ValueError(f"{where}: key 'max_concurrent_jobs' must be 0 (no limit) or more")
        if raw.get("warm_containers", 0) < 0:
            raise ValueError(f"{where}: key 'warm_containers' must be 0 (off) or more")
        if raw.get("warm_idle", 60) <= 0:
            raise ValueError(f"{where}: key 'warm_idle' must be positive")
        tls = _validate_tls(raw.get("tls"), where)
        instance = cls(server_url=url, name=raw.get("name", url), tls=tls,
                       container_prefix=raw.get("container_prefix", ""),
                       waiters=raw.get("waiters", 1),
                       time_between_polls=float(raw.get("time_between_polls", 0.5)),
                       max_concurrent_jobs=raw.get("max_concurrent_jobs", 100),
                       build_containers_on_start=raw.get("build_containers_on_start", False),
                       runtime=raw.get("runtime"),
                       warm_containers=raw.get("warm_containers", 0),
                       warm_idle=float(raw.get("warm_idle", 60)))
        instance._warn_if_plain_remote()
        return instance

    def _warn_if_plain_remote(self):
        parsed = urlparse(self.server_url)
        if parsed.scheme not in ("tcp", "http") or self.tls:
            return
        try:
            loopback = ipaddress.ip_address(parsed.hostname or "").is_loopback
        except ValueError:
            loopback = parsed.hostname == "localhost"
        if not loopback:
            logger.warning("docker instance %s is reached over plain TCP without TLS: anyone who "
                           "can reach %s controls that engine, which is root on its host",
                           self.name, self.server_url)


def _port(url: str) -> Optional[int]:
    try:
        return urlparse(url).port
    except ValueError:
        return None


def _validate_tls(tls: Optional[Mapping[str, Any]], where: str) -> Optional[Dict[str, Any]]:
    if tls is None:
        return None
    for key, value in tls.items():
        if key not in _TLS_KEYS:
            raise ValueError(f"{where}: unknown key 'tls.{key}'; known keys: "
                             f"{', '.join(sorted(_TLS_KEYS))}")
        if key == "verify":
            if not isinstance(value, bool):
                raise ValueError(f"{where}: key 'tls.verify' must be a bool")
        elif not isinstance(value, str):
            raise ValueError(f"{where}: key 'tls.{key}' must be a file path")
        elif not os.path.isfile(value):
            raise ValueError(f"{where}: key 'tls.{key}': file {value!r} does not exist")
    if ("client_cert" in tls) != ("client_key" in tls):
        raise ValueError(f"{where}: keys 'tls.client_cert' and 'tls.client_key' go together")
    return dict(tls)


def parse_instances(docker_instances: Any) -> List[InstanceConfig]:
    """Validates the ``docker_instances`` list; names must be unique.

    Raises:
        ValueError: the list is empty or not a list, or an instance is wrong.
    """
    if not isinstance(docker_instances, (list, tuple)):
        raise ValueError("docker_instances must be a list of dicts")
    if not docker_instances:
        raise ValueError("docker_instances is empty: give at least one docker instance")
    instances = [InstanceConfig.from_dict(raw, i) for i, raw in enumerate(docker_instances)]
    names = [instance.name for instance in instances]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"docker_instances: duplicate name(s) {', '.join(duplicates)}")
    return instances


def load_config(path_or_dict: Any) -> Dict[str, Any]:
    """Reads a ``from_config`` file (JSON) or dict into JobManager keyword arguments.

    Raises:
        ValueError: an unknown key, or no ``docker_instances``.
    """
    if isinstance(path_or_dict, Mapping):
        raw = dict(path_or_dict)
    else:
        with open(os.fspath(path_or_dict), encoding="utf-8") as stream:
            raw = json.load(stream)
        if not isinstance(raw, dict):
            raise ValueError(f"{path_or_dict}: the configuration must be a JSON object")
    unknown = sorted(set(raw) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown configuration key(s) {', '.join(map(repr, unknown))}; "
                         f"known keys: {', '.join(CONFIG_KEYS)}")
    if "docker_instances" not in raw:
        raise ValueError("configuration has no 'docker_instances'")
    return {CONFIG_KEYS[key]: value for key, value in raw.items()}


def settings_from(config_file: Optional[str], urls: List[Any], prefix: Optional[str] = None,
                  max_jobs: Optional[int] = None, containers_directory: Optional[str] = None
                  ) -> Dict[str, Any]:
    """JobManager keyword arguments from a ``from_config`` file, else from engines (each a
    URL, or a ``docker_instances`` dict: an engine taken from the environment), with
    every engine's ``container_prefix`` and ``max_concurrent_jobs`` overridden when given;
    validated. For the command line's ``--config``/``--engine``/``--prefix``/``--max-jobs``.

    Raises:
        ValueError: the file is missing, unreadable, not JSON or wrong, or a value is wrong;
            the message names the file.
    """
    instances: List[Dict[str, Any]]
    settings: Dict[str, Any] = {}
    if config_file:
        if not os.path.isfile(config_file):
            raise ValueError(f"configuration file {config_file} not found")
        try:
            settings = load_config(config_file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_file}: not JSON: {error}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read {config_file}: {error}") from None
        except ValueError as error:
            raise ValueError(f"{config_file}: {error}") from None
        listed = settings["docker_instances"]
        if not isinstance(listed, list) or not all(isinstance(i, dict) for i in listed):
            raise ValueError(f"{config_file}: docker_instances must be a list of dicts")
        instances = [dict(i) for i in listed]
    else:
        instances = [dict(url) if isinstance(url, Mapping) else {"server_url": url}
                     for url in urls]
    for instance in instances:
        if prefix is not None:
            instance["container_prefix"] = prefix
        if max_jobs is not None:
            instance["max_concurrent_jobs"] = max_jobs
    settings["docker_instances"] = instances
    if containers_directory is not None:
        settings["containers_directory"] = containers_directory
    parse_instances(instances)
    return settings


def parse_ssh_url(url: str) -> Tuple[str, Optional[str], Optional[int]]:
    """``(host, user, port)`` of ``ssh://[user@]host[:port]``.

    Raises:
        ValueError: no host, a path, a query, or a bad port.
    """
    parsed = urlparse(url)
    if parsed.scheme != "ssh" or not parsed.hostname:
        raise ValueError(f"{url!r}: an ssh URL is ssh://[user@]host[:port]")
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment or parsed.password:
        raise ValueError(f"{url!r}: an ssh URL is ssh://[user@]host[:port], with no path, "
                         f"query or password")
    port = parsed.port  # ValueError if not a number in range
    user = unquote(parsed.username) if parsed.username else None
    if parsed.hostname.startswith("-") or (user or "").startswith("-"):
        raise ValueError(f"{url!r}: a host or user may not start with '-'")
    return parsed.hostname, user, port
