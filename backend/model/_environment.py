"""The engine the docker CLI would use, for ``JobManager.from_env`` and the command line
without ``--engine`` (see docs/engines.rst, "The docker CLI's conventions").

In order: ``DOCKER_HOST`` (with ``DOCKER_TLS_VERIFY`` or ``DOCKER_TLS``, and the certificates
``ca.pem``, ``cert.pem`` and ``key.pem`` of ``DOCKER_CERT_PATH``, else of the docker CLI's
configuration folder); else the current docker context (``DOCKER_CONTEXT``, else
``currentContext`` of ``config.json``), read from the configuration folder (``DOCKER_CONFIG``,
else ``~/.docker``): ``contexts/meta/<sha256 of the name>/meta.json`` gives the endpoint and
``SkipTLSVerify``, ``contexts/tls/<sha256 of the name>/docker/`` the TLS material; the context
named ``default`` is the local socket; else ``unix:///var/run/docker.sock``.

Pure reading of files and of the environment given, in the caller's thread.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Mapping, NamedTuple, Optional
from urllib.parse import urlparse

#: The local engine's socket, as the docker CLI's default.
DEFAULT_URL = "unix:///var/run/docker.sock"
_TLS_FILES = (("ca_cert", "ca.pem"), ("client_cert", "cert.pem"), ("client_key", "key.pem"))


class EnvEngine(NamedTuple):
    """An engine taken from the environment: its ``docker_instances`` entry, and where it
    came from (``"DOCKER_HOST"``, ``"context NAME"`` or ``"default socket"``)."""

    instance: Dict[str, Any]
    source: str


def config_folder(environ: Mapping[str, str]) -> str:
    """The docker CLI's configuration folder: ``DOCKER_CONFIG``, else ``~/.docker``."""
    if environ.get("DOCKER_CONFIG"):
        return environ["DOCKER_CONFIG"]
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".docker")


def resolve(environ: Optional[Mapping[str, str]] = None) -> EnvEngine:
    """The engine the docker CLI would use with ``environ`` (default: ``os.environ``).

    Raises:
        ValueError: the current context does not exist or cannot be read, or
            ``config.json`` is not JSON; the message names the file.
    """
    environ = os.environ if environ is None else environ
    folder = config_folder(environ)
    host = environ.get("DOCKER_HOST", "")
    if host:
        return EnvEngine(_from_host(host, environ, folder), "DOCKER_HOST")
    name = environ.get("DOCKER_CONTEXT", "") or _current_context(folder)
    if name and name != "default":
        return EnvEngine(_from_context(name, folder), f"context {name}")
    return EnvEngine({"server_url": DEFAULT_URL}, "default socket")


def _from_host(host: str, environ: Mapping[str, str], folder: str) -> Dict[str, Any]:
    verify = bool(environ.get("DOCKER_TLS_VERIFY"))
    use_tls = verify or bool(environ.get("DOCKER_TLS"))
    instance: Dict[str, Any] = {"server_url": _with_port(host, use_tls)}
    if use_tls:
        tls = _tls_files(environ.get("DOCKER_CERT_PATH") or folder)
        tls["verify"] = verify
        instance["tls"] = tls
    return instance


def _with_port(url: str, use_tls: bool) -> str:
    """A ``tcp://`` URL without a port gets the docker CLI's default (2376 with TLS)."""
    parsed = urlparse(url)
    if parsed.scheme == "tcp" and parsed.hostname and parsed.port is None \
            and not parsed.netloc.endswith("]:"):
        return parsed._replace(netloc=f"{parsed.netloc}:{2376 if use_tls else 2375}").geturl()
    return url


def _tls_files(folder: str) -> Dict[str, Any]:
    """The TLS files of ``folder`` that exist (a client certificate only with its key)."""
    tls: Dict[str, Any] = {}
    for key, file_name in _TLS_FILES:
        path = os.path.join(folder, file_name)
        if os.path.isfile(path):
            tls[key] = path
    if ("client_cert" in tls) != ("client_key" in tls):
        tls.pop("client_cert", None)
        tls.pop("client_key", None)
    return tls


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except ValueError as error:
        raise ValueError(f"{path}: not JSON: {error}") from None


def _current_context(folder: str) -> str:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return ""
    try:
        config = _read_json(path)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    current = config.get("currentContext", "") if isinstance(config, dict) else ""
    return current if isinstance(current, str) else ""


def _from_context(name: str, folder: str) -> Dict[str, Any]:
    digest = hashlib.sha256(name.encode()).hexdigest()
    path = os.path.join(folder, "contexts", "meta", digest, "meta.json")
    try:
        meta = _read_json(path)
    except FileNotFoundError:
        raise ValueError(f"docker context {name!r} not found (no {path})") from None
    except OSError as error:
        raise ValueError(f"cannot read docker context {name!r}: {error}") from None
    endpoint = (meta.get("Endpoints") or {}).get("docker") if isinstance(meta, dict) else None
    if not isinstance(endpoint, dict) or not isinstance(endpoint.get("Host"), str) \
            or not endpoint["Host"]:
        raise ValueError(f"docker context {name!r} has no docker endpoint ({path})")
    tls = _tls_files(os.path.join(folder, "contexts", "tls", digest, "docker"))
    skip_verify = bool(endpoint.get("SkipTLSVerify"))
    instance: Dict[str, Any] = {"server_url": _with_port(endpoint["Host"], bool(tls))}
    if tls or (skip_verify and urlparse(endpoint["Host"]).scheme == "tcp"):
        tls["verify"] = not skip_verify
        instance["tls"] = tls
    return instance
