#!/usr/bin/env python3
"""Private Docker engines for tests, demos and benchmarks.

Each :class:`PrivateEngine` is a ``dockerd`` of its own, with its own socket, data root and exec
root under one short directory, so several run side by side (and beside the system engine)
without touching each other.  No bridge and no iptables rules are set up: the engine has only
the ``none`` and ``host`` networks, and a container in the default (``bridge``) mode gets just a
loopback interface, like ``none``.

Used as a module (by ``tests/conftest.py``)::

    from engines import PrivateEngine, build_busybox_image
    eng = PrivateEngine("e1", "/tmp/djm/e1")
    eng.start()
    build_busybox_image(eng.url)
    ...
    eng.stop()

and as a command line tool::

    python scripts/engines.py ensure                     # apt-get install what is missing
    python scripts/engines.py start --count 2 --root /tmp/djm
    python scripts/engines.py urls --root /tmp/djm
    python scripts/engines.py stop --root /tmp/djm

After :meth:`PrivateEngine.kill` (SIGKILL of ``dockerd`` only) its ``containerd`` dies too (dockerd
gives it a parent-death signal), but the ``containerd-shim-runc-v2`` processes of running
containers, and so the containers, go on running.  A later :meth:`PrivateEngine.start` on the same
root first SIGKILLs the processes of those containers (dockerd would otherwise stop each one with
SIGTERM and a 10 s grace time), starts a new containerd, which takes the shims back, and dockerd
sees the containers exited (137).  A :meth:`PrivateEngine.stop` after
:meth:`PrivateEngine.kill` cleans up too: it starts a short-lived dockerd to do that properly, then
SIGKILLs whatever is still left.  (``start`` also kills a containerd left without its dockerd and
removes ``containerd.pid``: dockerd would otherwise try to re-use a dead, zombie or hung
containerd named there and fail with "timeout waiting for containerd to start".)

Engine kinds (:data:`KINDS`, :func:`make_engine`): ``docker20`` is the system's ``dockerd``
(Debian 12's Docker 20.10); ``docker28`` is Debian sid's ``docker.io`` (Docker 28.5), unpacked
under ``/var/cache/djm`` without touching the system's apt sources, run on the system's
containerd and runc and started with ``DOCKER_MIN_API_VERSION=1.44`` (it refuses older clients
as Docker 29 does); ``podman`` is :class:`PodmanEngine`, Podman 4.3's Docker-compatible
service.  ``ensure --kinds ...`` installs what each kind needs (and graphviz for the docs).

Only the standard library is needed, except for :func:`build_busybox_image` (docker-py).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = [
    "BUSYBOX_TAG",
    "DEFAULT_ROOT",
    "EngineError",
    "KINDS",
    "PodmanEngine",
    "PrivateEngine",
    "build_busybox_image",
    "engine_answers",
    "engines_under",
    "ensure_kinds",
    "ensure_packages",
    "make_engine",
]

BUSYBOX_TAG = "backend-test-busybox"
DEFAULT_ROOT = "/tmp/djm"
BUSYBOX_BINARY = "/bin/busybox"
BUSYBOX_DOCKERFILE_DIR = Path(__file__).resolve().parent.parent / "tests" / "images" / "busybox"
APT_PACKAGES = ("docker.io", "busybox-static", "debootstrap")  # debootstrap: scripts/images.py
#: The engine kinds the tests run on.
KINDS = ("docker20", "docker28", "podman")
#: Packages for the docs and for the Podman kind (apt); sid's docker.io for docker28 (cached).
DOCS_PACKAGES = ("graphviz",)
PODMAN_PACKAGES = ("podman", "catatonit", "runc")
#: The ssh client and server of the ssh:// tests (an sshd of the test run's own).
SSH_PACKAGES = ("openssh-client", "openssh-server")
CACHE = Path("/var/cache/djm")
DOCKER28_DIR = CACHE / "docker-28.5"
DOCKER28_DOCKERD = DOCKER28_DIR / "usr" / "sbin" / "dockerd"
#: Docker 29's floor, which Docker 28.5 applies when told so.
DOCKER28_MIN_API = "1.44"


class EngineError(RuntimeError):
    """A private engine could not be started, stopped or used."""


# --------------------------------------------------------------------------- packages


def _dpkg_installed(package: str) -> bool:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True, text=True, check=False,
        ).stdout
    except FileNotFoundError:  # not a Debian system: nothing we can check
        return False
    return out.strip().endswith("install ok installed")


def _dockerd_binary() -> str | None:
    return shutil.which("dockerd") or next(
        (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.access(p, os.X_OK)), None)


def ensure_packages() -> bool:
    """Install ``docker.io``, ``busybox-static`` and ``debootstrap`` (the python image of
    ``scripts/images.py``) with apt when one is missing.

    Returns True when something was installed, False when all was there already.
    """
    if _dockerd_binary() and _dpkg_installed("busybox-static") and os.path.exists(BUSYBOX_BINARY) \
            and _dpkg_installed("debootstrap"):
        return False
    if os.geteuid() != 0:
        raise EngineError("dockerd or busybox-static is missing and we are not root: "
                          f"install {' '.join(APT_PACKAGES)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdin=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES],
                   check=True, env=env, stdin=subprocess.DEVNULL)
    if not _dockerd_binary():
        raise EngineError("apt-get installed docker.io but no dockerd binary was found")
    return True


def _apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0:
        raise EngineError(f"{' '.join(packages)} missing and we are not root: install them "
                          "with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdin=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages],
                   check=True, env=env, stdin=subprocess.DEVNULL)


def _ensure_apt(packages: tuple[str, ...]) -> bool:
    missing = [p for p in packages if not _dpkg_installed(p)]
    if missing:
        _apt_install(missing)
    return bool(missing)


def _debian_mirror() -> str:
    """The Debian mirror apt already uses here (deb822 ``URIs:`` or a ``deb`` line)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            uris = words[1:] if words[:1] == ["URIs:"] else words[1:2] if words[:1] == ["deb"] \
                else []
            for uri in uris:
                if uri.rstrip("/").endswith("/debian"):
                    return uri
    raise EngineError("no Debian mirror found in /etc/apt: cannot fetch sid's docker.io")


def ensure_docker28() -> bool:
    """Sid's ``docker.io`` unpacked under :data:`DOCKER28_DIR` (downloaded once, with a
    private apt state: the system's sources and lists are not touched)."""
    if os.access(DOCKER28_DOCKERD, os.X_OK):
        return False
    if os.geteuid() != 0:
        raise EngineError(f"{DOCKER28_DOCKERD} is missing and we are not root")
    private = CACHE / "sid"
    (private / "sources.list.d").mkdir(parents=True, exist_ok=True)
    (private / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (private / "sources.list.d" / "sid.sources").write_text(
        f"Types: deb\nURIs: {_debian_mirror()}\nSuites: sid\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    options = ["-o", "Dir::Etc::sourcelist=/dev/null",
               "-o", f"Dir::Etc::sourceparts={private / 'sources.list.d'}",
               "-o", f"Dir::State::Lists={private / 'lists'}",
               "-o", f"Dir::Cache={private / 'cache'}", "-o", "APT::Sandbox::User=root"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", *options, "update", "-qq"], check=True, env=env,
                       stdin=subprocess.DEVNULL)
        for old in private.glob("docker.io_*.deb"):
            old.unlink()
        subprocess.run(["apt-get", *options, "download", "-qq", "docker.io"], check=True,
                       env=env, cwd=private, stdin=subprocess.DEVNULL)
        package = next(private.glob("docker.io_*.deb"))
        unpacked = Path(tempfile.mkdtemp(prefix="docker28-", dir=CACHE))
        subprocess.run(["dpkg-deb", "-x", str(package), str(unpacked)], check=True)
    except (subprocess.CalledProcessError, StopIteration, OSError) as error:
        raise EngineError(f"fetching Debian sid's docker.io failed: {error}") from error
    shutil.rmtree(DOCKER28_DIR, ignore_errors=True)
    unpacked.rename(DOCKER28_DIR)  # at once: a half-unpacked folder never looks present
    return True


def ensure_ssh() -> bool:
    """Installs ``openssh-client`` and ``openssh-server`` without starting the system's sshd
    (a ``policy-rc.d`` refuses every service start during the install; the tests run an sshd
    of their own on 127.0.0.1). Returns True when something was installed."""
    missing = [p for p in SSH_PACKAGES if not _dpkg_installed(p)]
    if not missing:
        return False
    policy = Path("/usr/sbin/policy-rc.d")
    had_policy = policy.exists()
    if not had_policy and os.geteuid() == 0:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        _apt_install(missing)
    finally:
        if not had_policy and policy.exists():
            policy.unlink()
    return True


def ensure_kinds(kinds: tuple[str, ...] = KINDS, docs: bool = True) -> list[str]:
    """Installs what the engine ``kinds`` (and the docs) need; returns what was installed.

    Quick when all is there (dpkg-query and a file check). Raises :class:`EngineError` with
    one line naming the kind whose tools could not be installed.
    """
    installed = []
    steps = [("docker20", ensure_packages)]
    steps += [("docker28", ensure_docker28), ("podman", lambda: _ensure_apt(PODMAN_PACKAGES))]
    steps.append(("ssh", ensure_ssh))
    if docs:
        steps.append(("docs", lambda: _ensure_apt(DOCS_PACKAGES)))
    for kind, step in steps:
        if kind not in ("docs", "ssh") and kind not in kinds:
            continue
        if kind == "docker28":
            ensure_packages()  # it runs on the system's containerd and runc
        try:
            if step():
                installed.append(kind)
        except (EngineError, subprocess.CalledProcessError, OSError) as error:
            raise EngineError(f"the tools of engine kind {kind} could not be installed: "
                              f"{error}") from error
    return installed


# --------------------------------------------------------------------------- ping


def engine_answers(url: str, timeout: float = 2.0, tls: dict | None = None) -> bool:
    """True when the engine at ``url`` answers ``GET /_ping`` with ``OK`` within ``timeout``.

    ``url`` is ``unix:///path`` or ``tcp://host:port``; for a TLS engine give
    ``tls={"ca_cert", "client_cert", "client_key"}`` (file paths).
    """
    try:
        if url.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(url[len("unix://"):])
        elif url.startswith(("tcp://", "http://", "https://")):
            host, _, port = url.split("://", 1)[1].rstrip("/").rpartition(":")
            sock = socket.create_connection((host, int(port)), timeout=timeout)
            if tls:
                ctx = ssl.create_default_context(cafile=tls["ca_cert"])
                ctx.load_cert_chain(tls["client_cert"], tls["client_key"])
                sock = ctx.wrap_socket(sock, server_hostname=host)
        else:
            raise ValueError(f"unsupported engine url {url!r}")
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    except (OSError, ValueError, KeyError):
        return False
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b" ")[1:2] == [b"200"] and body.strip() == b"OK"


# --------------------------------------------------------------------------- processes


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """True for a live process; a zombie counts as dead."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _descendants(pids: list[int]) -> list[int]:
    """``pids`` and all their descendants (as seen now)."""
    children: dict[int, list[int]] = {}
    for p in _all_pids():
        pp = _ppid(p)
        if pp is not None:
            children.setdefault(pp, []).append(p)
    out, todo = [], list(pids)
    while todo:
        p = todo.pop()
        if p not in out:
            out.append(p)
            todo.extend(children.get(p, []))
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_dead(pids, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if not any(_alive(p) for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# --------------------------------------------------------------------------- engine


class PrivateEngine:
    """A private ``dockerd`` whose files all live under ``root``.

    ``root/docker.sock`` (the API socket), ``root/data`` (data root), ``root/x`` (exec root: kept
    short because containerd puts sockets there), ``root/pid`` (pidfile), ``root/dockerd.log``.
    Keep ``root`` short too (a unix socket path has at most 107 bytes).

    With ``tcp_port`` and ``tls={"ca_cert", "server_cert", "server_key"}`` the engine also listens
    on ``tcp://127.0.0.1:PORT`` with ``--tlsverify`` (clients need a cert signed by that CA).
    Without ``tls`` the TCP socket is plain (loopback only all the same).
    """

    def __init__(self, name: str, root: str | os.PathLike, tcp_port: int | None = None,
                 tls: dict | None = None):
        self.name = name
        self.root = Path(root).absolute()
        self.tcp_port = tcp_port
        self.tls = dict(tls) if tls else None
        if self.tls:
            missing = {"ca_cert", "server_cert", "server_key"} - set(self.tls)
            if missing:
                raise ValueError(f"tls is missing {sorted(missing)}")
        self.sock_path = self.root / "docker.sock"
        self.data_root = self.root / "data"
        self.exec_root = self.root / "x"
        self.pidfile = self.root / "pid"
        self.log_path = self.root / "dockerd.log"
        if len(str(self.sock_path)) > 100:
            raise ValueError(f"root {str(self.root)!r} is too long for a unix socket path")
        self._proc: subprocess.Popen | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<PrivateEngine {self.name} {self.url} {state}>"

    # -- addresses

    @property
    def url(self) -> str:
        return f"unix://{self.sock_path}"

    @property
    def tcp_url(self) -> str | None:
        return f"tcp://127.0.0.1:{self.tcp_port}" if self.tcp_port else None

    @property
    def pid(self) -> int | None:
        """Pid of this engine's live dockerd, or None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        pids = self._dockerd_pids()
        return pids[0] if pids else None

    # -- state

    def _is_ours(self, pid: int) -> bool:
        """True when ``pid`` is a dockerd on our data root."""
        args = _cmdline(pid)
        if not args or os.path.basename(args[0]) != "dockerd":
            return False
        data = str(self.data_root)
        return any(a == data or a == f"--data-root={data}" for a in args)

    def _dockerd_pids(self) -> list[int]:
        """Live dockerd processes on our data root: the pidfile's first, then any other."""
        found = []
        try:
            pid = int(self.pidfile.read_text().strip())
            if _alive(pid) and self._is_ours(pid):
                found.append(pid)
        except (OSError, ValueError):
            pass
        for pid in _all_pids():
            if pid not in found and _alive(pid) and self._is_ours(pid):
                found.append(pid)
        return found

    def leftovers(self, kind: str = "") -> list[int]:
        """Pids of live processes still using our exec root: ``containerd`` (kind
        ``"containerd"``) and the ``containerd-shim-*`` of containers (kind ``"shim"``)."""
        marker = str(self.exec_root) + "/"
        out = []
        for pid in _all_pids():
            args = _cmdline(pid)
            name = os.path.basename(args[0]) if args else ""
            if name == "containerd":
                this = "containerd"
            elif name.startswith("containerd-shim"):
                this = "shim"
            else:
                continue
            if kind in ("", this) and any(a.startswith(marker) for a in args) and _alive(pid):
                out.append(pid)
        return out

    def _kill_container_processes(self) -> None:
        """SIGKILL the processes of our running containers; their shims stay, so dockerd (this
        one or the next) sees them exited at once instead of stopping each one with SIGTERM and
        a 10 s grace time."""
        shims = self.leftovers("shim")
        tree = [p for p in _descendants(shims) if p not in shims]
        for p in tree:
            _signal(p, signal.SIGKILL)
        _wait_dead(tree, 5)

    def is_running(self) -> bool:
        """True when a dockerd runs on our data root (answering or not)."""
        return self.pid is not None

    def answers(self, timeout: float = 2.0) -> bool:
        return engine_answers(self.url, timeout)

    # -- control

    kind = "docker20"

    def _binary(self) -> str:
        dockerd = _dockerd_binary()
        if not dockerd:
            raise EngineError("dockerd not found: run ensure_packages() (apt-get install docker.io)")
        return dockerd

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _command(self) -> list[str]:
        dockerd = self._binary()
        cmd = [dockerd, "--host", self.url,
               "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
               "--pidfile", str(self.pidfile),
               "--bridge", "none", "--iptables=false", "--ip-masq=false"]
        if self.tcp_port:
            cmd += ["--host", self.tcp_url]
            if self.tls:
                cmd += ["--tlsverify", "--tlscacert", str(self.tls["ca_cert"]),
                        "--tlscert", str(self.tls["server_cert"]),
                        "--tlskey", str(self.tls["server_key"])]
        return cmd

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 30) -> "PrivateEngine":
        """Start dockerd unless it already runs and answers; wait until it answers.

        A dockerd of ours that runs but does not answer is killed first; a stale pidfile is
        removed.  Raises :class:`EngineError` with the end of the log when it fails.
        """
        pids = self._dockerd_pids()
        if pids and self._wait_answers(pids[0], min(timeout, 10)):
            for extra in pids[1:]:  # never two engines on one data root
                self._kill_pids([extra])
            return self
        if pids:
            self._kill_pids(pids)
        self._kill_container_processes()
        # A containerd left without its dockerd goes too (the shims outlive it, and the new
        # containerd takes them back).  Its pidfile must go: dockerd re-uses the containerd named
        # there whenever kill(pid, 0) works -- on a zombie or on a process that got the pid
        # later as well -- and then fails with "timeout waiting for containerd to start".
        self._kill_pids(self.leftovers("containerd"))
        (self.exec_root / "containerd" / "containerd.pid").unlink(missing_ok=True)
        self.pidfile.unlink(missing_ok=True)
        for d in (self.root, self.data_root, self.exec_root):
            d.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} start {self.name}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, env=self._env())
        if not self._wait_answers(self._proc.pid, timeout):
            code = self._proc.poll()
            if code is None:
                self._kill_pids([self._proc.pid])
            raise EngineError(
                f"engine {self.name} at {self.url} did not answer within {timeout}s"
                f" ({'exit code ' + str(code) if code is not None else 'killed'});"
                f" end of {self.log_path}:\n{self.log_tail()}")
        return self

    def _wait_answers(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self.answers(timeout=1.0):
                return True
            if not _alive(pid) or time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _reap(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
            else:
                self._proc = None

    def _kill_pids(self, pids: list[int]) -> None:
        for p in pids:
            _signal(p, signal.SIGKILL)
        if self._proc is not None and self._proc.pid in pids:
            self._reap()
        _wait_dead(pids, 5)

    def kill(self) -> None:
        """SIGKILL dockerd at once (for fault tests).

        The shims of running containers (and so the containers) survive; see the module doc.
        """
        containerd = self.leftovers("containerd")
        pids = self._dockerd_pids()
        if self._proc is not None and self._proc.poll() is None and self._proc.pid not in pids:
            pids.append(self._proc.pid)
        self._kill_pids(pids)
        _wait_dead(containerd, 5)  # dockerd gives it a parent-death signal (SIGKILL)

    def stop(self, timeout: float = 20) -> None:
        """Stop dockerd (SIGTERM, then SIGKILL after ``timeout``) and everything it left.

        Running containers are killed (SIGKILL), not stopped gracefully.  When containerd or
        shims remain (dockerd was killed before), a fresh dockerd is started once to clean them
        up properly; what still remains is SIGKILLed with its child processes.
        """
        self._kill_container_processes()
        self._terminate(timeout)
        if self.leftovers():
            try:
                self.start(timeout=min(timeout, 30))
            except EngineError:
                pass
            self._terminate(timeout)
        left = self.leftovers()
        if left:  # last resort: the containers' processes go with their shims
            tree = _descendants(left)
            for p in tree:
                _signal(p, signal.SIGKILL)
            _wait_dead(tree, 5)
        self.pidfile.unlink(missing_ok=True)
        self._unmount_all()

    def _mounts(self) -> list[str]:
        """Mount points under ``root``, deepest first."""
        prefix = str(self.root) + "/"
        try:
            with open("/proc/self/mountinfo") as f:
                points = [line.split()[4] for line in f]
        except OSError:
            return []
        points = [p.encode().decode("unicode_escape") for p in points]  # "\040" is a space
        return sorted({p for p in points if p.startswith(prefix)}, key=len, reverse=True)

    def _unmount_all(self) -> None:
        """Detach what a killed dockerd left mounted under ``root`` (the data root bind-mounted
        on itself, ``x/netns/default``, overlays of running containers): once dockerd is gone.
        A dockerd that exits cleanly unmounts them itself; one that was killed does not."""
        if self._dockerd_pids():
            return
        libc = ctypes.CDLL(None, use_errno=True)
        for point in self._mounts():
            libc.umount2(point.encode(), 2)  # MNT_DETACH

    def purge(self) -> None:
        """Stop the engine and delete ``root`` with everything in it (images included)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        if self.root.exists():
            raise EngineError(f"could not remove {self.root}; mounts left: {self._mounts()}")

    def _terminate(self, timeout: float) -> None:
        pids = self._dockerd_pids()
        if not pids:
            self._reap()
            return
        for p in pids:
            _signal(p, signal.SIGTERM)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if not _wait_dead(pids, timeout):
            self._kill_pids(pids)
        self._reap()
        # dockerd stops its containerd on a clean exit; give it a moment
        _wait_dead(self.leftovers(), 5)

    def restart(self, timeout: float = 30) -> "PrivateEngine":
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> "PrivateEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Docker28Engine(PrivateEngine):
    """A private Docker 28.5 (Debian sid's ``dockerd``, see :func:`ensure_docker28`) that
    refuses clients below Engine API 1.44, as Docker 29 does.  Everything else is
    :class:`PrivateEngine`'s (the system's containerd and runc)."""

    kind = "docker28"

    def _binary(self) -> str:
        if not os.access(DOCKER28_DOCKERD, os.X_OK):
            raise EngineError(f"{DOCKER28_DOCKERD} is missing: run engines.py ensure")
        return str(DOCKER28_DOCKERD)

    def _env(self) -> dict[str, str]:
        return dict(os.environ, DOCKER_MIN_API_VERSION=DOCKER28_MIN_API)


class PodmanEngine:
    """A private Podman service (``podman system service``) whose files all live under ``root``.

    ``root/docker.sock`` (the Docker-compatible API), ``root/s`` (storage), ``root/r`` (run
    root), ``root/t`` (libpod's tmp dir: exit files, events), ``root/containers.conf`` (runc,
    cgroupfs, file events: crun does not run on this machine's hybrid cgroups),
    ``root/podman.log``.  The service's working directory is ``root``: conmon 2.1.6 writes its
    ``oom`` markers there.

    Podman has no daemon owning the containers: each runs under its own ``conmon``, which
    outlives the service.  :meth:`kill` SIGKILLs the service only, so running containers go on
    (unlike Docker's, whose processes are SIGKILLed by the next :meth:`start`); a later
    :meth:`start` serves them again, still running.  :meth:`stop` removes every container
    (``podman rm -af``), ends the service, then SIGKILLs any conmon left with its container's
    processes and unmounts what is left under ``root``.
    """

    kind = "podman"

    def __init__(self, name: str, root: str | os.PathLike):
        self.name = name
        self.root = Path(root).absolute()
        self.sock_path = self.root / "docker.sock"
        self.log_path = self.root / "podman.log"
        self.conf_path = self.root / "containers.conf"
        if len(str(self.sock_path)) > 100:
            raise ValueError(f"root {str(self.root)!r} is too long for a unix socket path")
        self._proc: subprocess.Popen | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<PodmanEngine {self.name} {self.url} {state}>"

    @property
    def url(self) -> str:
        return f"unix://{self.sock_path}"

    def _base(self) -> list[str]:
        podman = shutil.which("podman")
        if not podman:
            raise EngineError("podman not found: run engines.py ensure (apt-get install podman)")
        return [podman, "--root", str(self.root / "s"), "--runroot", str(self.root / "r"),
                "--tmpdir", str(self.root / "t")]

    def _env(self) -> dict[str, str]:
        return dict(os.environ, CONTAINERS_CONF=str(self.conf_path))

    def _write_conf(self) -> None:
        for d in ("s", "r", "t"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(
            '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
            f'events_logger = "file"\ntmp_dir = "{self.root / "t"}"\n'
            f'events_logfile_path = "{self.root / "t" / "events.log"}"\n')

    def _is_ours(self, pid: int, names: tuple[str, ...]) -> bool:
        args = _cmdline(pid)
        if not args or os.path.basename(args[0]) not in names:
            return False
        marker = str(self.root) + "/"
        return any(a.startswith(marker) or f"={marker}" in a for a in args)

    def _service_pids(self) -> list[int]:
        return [p for p in _all_pids() if _alive(p) and self._is_ours(p, ("podman",))
                and "service" in _cmdline(p)]

    @property
    def pid(self) -> int | None:
        """Pid of this engine's live service, or None."""
        pids = self._service_pids()
        return pids[0] if pids else None

    def leftovers(self, kind: str = "") -> list[int]:
        """Live processes of ours other than the service: ``conmon`` (kind ``"conmon"``) and
        podman's short-lived ``container cleanup`` commands (kind ``"podman"``)."""
        names = ("conmon",) if kind == "conmon" else ("podman",) if kind == "podman" \
            else ("conmon", "podman")
        service = set(self._service_pids())
        return [p for p in _all_pids() if p not in service and _alive(p)
                and self._is_ours(p, names)]

    def is_running(self) -> bool:
        return self.pid is not None

    def answers(self, timeout: float = 2.0) -> bool:
        return engine_answers(self.url, timeout)

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 30) -> "PodmanEngine":
        """Start the service unless it answers already; wait until it answers."""
        if self.answers():
            return self
        self._kill_pids(self._service_pids())
        self.sock_path.unlink(missing_ok=True)
        self._write_conf()
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} start {self.name}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [*self._base(), "system", "service", "--time=0", self.url],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                start_new_session=True, close_fds=True, env=self._env())
        deadline = time.monotonic() + timeout
        while not self.answers(timeout=1.0):
            if self._proc.poll() is not None or time.monotonic() >= deadline:
                code = self._proc.poll()
                self._kill_pids([self._proc.pid])
                raise EngineError(
                    f"podman engine {self.name} at {self.url} did not answer within {timeout}s"
                    f" ({'exit code ' + str(code) if code is not None else 'killed'});"
                    f" end of {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def _kill_pids(self, pids: list[int]) -> None:
        for p in pids:
            _signal(p, signal.SIGKILL)
        if self._proc is not None and self._proc.pid in pids:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        _wait_dead(pids, 5)

    def kill(self) -> None:
        """SIGKILL the service at once (for fault tests); containers go on under conmon."""
        self._kill_pids(self._service_pids())
        self._proc = None

    def stop(self, timeout: float = 20) -> None:
        """Remove every container, end the service, then SIGKILL and unmount what is left."""
        if self.conf_path.exists():
            try:
                subprocess.run([*self._base(), "rm", "--all", "--force", "--time", "0"],
                               env=self._env(), cwd=self.root, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=timeout, check=False)
            except (subprocess.TimeoutExpired, EngineError, OSError):
                pass
        pids = self._service_pids()
        for p in pids:
            _signal(p, signal.SIGTERM)
        if not _wait_dead(pids, timeout):
            self._kill_pids(pids)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        _wait_dead(self.leftovers("podman"), 5)  # cleanup commands finish by themselves
        left = self.leftovers()
        tree = _descendants(left)
        for p in tree:
            _signal(p, signal.SIGKILL)
        _wait_dead(tree, 5)
        PrivateEngine._unmount_all(self)  # type: ignore[arg-type]

    def _mounts(self) -> list[str]:
        return PrivateEngine._mounts(self)  # type: ignore[arg-type]

    def _dockerd_pids(self) -> list[int]:  # for PrivateEngine._unmount_all
        return self._service_pids()

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, timeout: float = 30) -> "PodmanEngine":
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> "PodmanEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def make_engine(kind: str, name: str, root: str | os.PathLike):
    """A private engine of ``kind`` (one of :data:`KINDS`) named ``name`` under ``root``."""
    classes = {"docker20": PrivateEngine, "docker28": Docker28Engine, "podman": PodmanEngine}
    if kind not in classes:
        raise ValueError(f"unknown engine kind {kind!r}: one of {', '.join(KINDS)}")
    return classes[kind](name, root)


#: The first letter of an engine's directory names its kind (e1 docker20, d1 docker28, p1 podman).
KIND_PREFIXES = {"docker20": "e", "docker28": "d", "podman": "p"}


def engines_under(root: str | os.PathLike, kinds: tuple[str, ...] = KINDS) -> list:
    """The engines whose directories (``e1``, ``d1``, ``p1``, …) exist under ``root``, by kind
    (:data:`KIND_PREFIXES`) and number."""
    root = Path(root)
    found = []
    for kind in kinds:
        prefix = KIND_PREFIXES[kind]
        names = [p.name for p in root.glob(prefix + "*")
                 if p.is_dir() and p.name[1:].isdigit()]
        found += [make_engine(kind, n, root / n) for n in sorted(names, key=lambda n: int(n[1:]))]
    return found


# --------------------------------------------------------------------------- image


def api_version(url: str) -> str:
    """The Engine API version the library speaks to the engine at ``url`` (its negotiation,
    :func:`backend._features.negotiate`): for docker-py clients of tests and scripts."""
    import docker

    from backend._features import MIN_API_VERSION, negotiate

    with docker.APIClient(base_url=url, version=MIN_API_VERSION, timeout=10) as client:
        return negotiate(client.version(api_version=False), url)



def build_busybox_image(url: str, tag: str = BUSYBOX_TAG, timeout: float = 120) -> str:
    """Build the ``FROM scratch`` busybox image (``tests/images/busybox``) on the engine at
    ``url`` and return its id.  Quick when the engine has it cached.

    The build context is a temporary copy of that directory plus ``/bin/busybox`` (which must be
    the static binary of busybox-static).
    """
    import docker  # only this function needs docker-py

    if not os.path.exists(BUSYBOX_BINARY):
        raise EngineError(f"{BUSYBOX_BINARY} is missing: run ensure_packages()")
    with tempfile.TemporaryDirectory(prefix="djm-bb-") as ctx:
        shutil.copy(BUSYBOX_DOCKERFILE_DIR / "Dockerfile", ctx)
        shutil.copy(BUSYBOX_BINARY, os.path.join(ctx, "busybox"))
        client = docker.APIClient(base_url=url, timeout=timeout, version=api_version(url))
        try:
            image_id = None
            for chunk in client.build(path=ctx, tag=tag, rm=True, forcerm=True, decode=True):
                if "error" in chunk:
                    raise EngineError(f"building {tag} on {url} failed: {chunk['error'].strip()}")
                image_id = (chunk.get("aux") or {}).get("ID", image_id)
            return image_id or client.inspect_image(tag)["Id"]
        finally:
            client.close()


# --------------------------------------------------------------------------- CLI


def _each(engines: list[PrivateEngine], action) -> None:
    """Run ``action(engine)`` for all engines at once; re-raise the first error."""
    with ThreadPoolExecutor(max_workers=max(1, len(engines))) as pool:
        for future in [pool.submit(action, eng) for eng in engines]:
            future.result()


def _cmd_start(args) -> int:
    root = Path(args.root)
    prefix = KIND_PREFIXES[args.kind]
    engines = [make_engine(args.kind, f"{prefix}{i}", root / f"{prefix}{i}")
               for i in range(1, args.count + 1)]

    def start(eng: PrivateEngine) -> None:
        eng.start(timeout=args.timeout)
        if not args.no_image:
            build_busybox_image(eng.url)

    _each(engines, start)
    for eng in engines:
        print(f"{eng.name} {eng.url}")
    return 0


def _cmd_stop(args) -> int:
    engines = engines_under(args.root)
    _each(engines, lambda eng: eng.purge() if args.purge else eng.stop())
    for eng in engines:
        print(f"{eng.name} {'removed' if args.purge else 'stopped'}")
    return 0


def _cmd_urls(args) -> int:
    for eng in engines_under(args.root):
        if eng.answers():
            print(eng.url)
    return 0


def _cmd_ensure(args) -> int:
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise EngineError(f"unknown engine kinds {sorted(unknown)}: {', '.join(KINDS)}")
    installed = ensure_kinds(kinds, docs=not args.no_docs)
    print("installed for " + " ".join(installed) if installed else "packages present")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engines.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ensure", help="install what the engine kinds and the docs need")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated engine kinds")
    p.add_argument("--no-docs", action="store_true", help="not graphviz")
    p.set_defaults(func=_cmd_ensure)
    p = sub.add_parser("start", help="start engines e1..eN under ROOT (those not running)")
    p.add_argument("--count", type=int, default=2)
    p.add_argument("--kind", choices=KINDS, default="docker20")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--no-image", action="store_true", help="do not build the busybox image")
    p.set_defaults(func=_cmd_start)
    p = sub.add_parser("stop", help="stop every engine under ROOT")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.add_argument("--purge", action="store_true", help="also delete their directories")
    p.set_defaults(func=_cmd_stop)
    p = sub.add_parser("urls", help="print the URLs of the engines under ROOT that answer")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.set_defaults(func=_cmd_urls)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EngineError as exc:
        print(f"engines.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
