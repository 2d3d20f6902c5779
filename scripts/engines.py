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
service.  ``cgroup2`` (:data:`VM_KIND`, not in :data:`KINDS`) is :class:`VmEngine`, Docker 20.10
in a Debian 12 VM under qemu whose kernel has only the unified cgroup v2 hierarchy, built once
by :func:`ensure_vm` under ``/var/cache/djm/vm-cgroup2-r<recipe>`` and reached over TCP with verified
TLS.  ``ensure --kinds ...`` installs what each kind needs (and graphviz for the docs).

Only the standard library is needed, except for :func:`build_busybox_image` (docker-py).
"""

from __future__ import annotations

import argparse
import ctypes
import lzma
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = [
    "BUSYBOX_TAG",
    "DEFAULT_ROOT",
    "EngineError",
    "KINDS",
    "PodmanEngine",
    "PrivateEngine",
    "VM_KIND",
    "VmEngine",
    "build_busybox_image",
    "docker_client",
    "engine_answers",
    "engines_under",
    "ensure_kinds",
    "ensure_packages",
    "ensure_vm",
    "make_certificates",
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
    steps += [("docker28", ensure_docker28), ("podman", lambda: _ensure_apt(PODMAN_PACKAGES)),
              (VM_KIND, lambda: ensure_vm())]
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


# --------------------------------------------------------------------------- cgroup v2 VM

#: The kind of the cgroup v2 engine, :class:`VmEngine`. Not in :data:`KINDS`: under emulation
#: it is too slow for the whole matrix; ``tests/engines/test_cgroup2.py`` runs a short suite on it.
VM_KIND = "cgroup2"
#: Bumped when the recipe of :func:`ensure_vm` changes. Part of the cache's name: a worktree
#: of another recipe keeps its own cache, and neither rebuilds over the other.
#: 2: the data root on a disk of its own, XFS mounted with ``pquota`` (a storage quota).
VM_RECIPE = "2"
#: The cached VM: ``vmlinux``, ``initrd.cpio``, ``rootfs.img`` and ``recipe``.
VM_DIR = CACHE / f"vm-cgroup2-r{VM_RECIPE}"
#: ``xfsprogs``: the VM's data disk is made on the host (``mkfs.xfs``) at each fresh start.
VM_HOST_PACKAGES = ("qemu-system-x86", "qemu-utils", "debootstrap", "e2fsprogs", "openssl",
                    "busybox-static", "xfsprogs")
#: Size of the VM's data disk (a sparse file on the host; dockerd's data root in the VM).
VM_DATA_SIZE = "4G"
#: Where dockerd keeps its images and layers in the VM: the data disk, mounted there.
VM_DATA_ROOT = "/var/lib/docker"
VM_GUEST_PACKAGES = ("docker.io", "containerd", "runc", "iproute2", "kmod", "ca-certificates")
#: What the initramfs loads (with their dependencies) to mount the root: Debian builds them
#: as modules.
VM_BOOT_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")
VM_SUITE = "bookworm"
VM_DOCKER_PORT = 2376
VM_MEMORY_MB = 1536
VM_CPUS = 2
#: The kernel's command line: the unified hierarchy only; ``no_timer_check``, else a slow
#: emulation fails the kernel's timer check at boot ("IO-APIC + timer doesn't work", a panic).
VM_APPEND = ("console=ttyS0 root=/dev/vda rw panic=-1 no_timer_check "
             "systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all")

#: The initramfs' ``/init`` (busybox): load the modules of the root's disk, mount it, switch.
_VM_INITRAMFS_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
for m in {modules}; do insmod /lib/$m.ko || echo "initramfs: insmod $m failed"; done
n=0
while [ ! -b /dev/vda ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
mount -t ext4 -o rw /dev/vda /newroot || {{ echo "initramfs: cannot mount /dev/vda"; poweroff -f; }}
umount /proc
umount /dev
exec switch_root /newroot /init
"""

#: The root's ``/init``: cgroup v2 with its controllers enabled, the network of qemu's user
#: mode, containerd, then dockerd on TCP with verified TLS (the certificates come on the
#: second disk, a tar).
_VM_INIT = f"""#!/bin/sh
# The cgroup v2 engine's init, written by scripts/engines.py (ensure_vm).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# written to the disk within a second or two: a VM killed (the engine lost) boots again whole
mount -o remount,commit=1 /
echo 100 > /proc/sys/vm/dirty_expire_centisecs
echo 100 > /proc/sys/vm/dirty_writeback_centisecs
# the daemons in a child cgroup: dockerd reads its own cgroup's files (memory.swap.max...)
mkdir -p /sys/fs/cgroup/init
echo $$ > /sys/fs/cgroup/init/cgroup.procs
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control
done
echo "init: cgroup2 controllers $(cat /sys/fs/cgroup/cgroup.subtree_control)"
modprobe virtio_net
modprobe overlay
# the data root on the third disk (XFS, made by the host), mounted with project quota: overlay2
# then gives each container a storage quota (HostConfig.StorageOpt size)
modprobe xfs
mkdir -p {VM_DATA_ROOT}
if mount -t xfs -o pquota /dev/vdc {VM_DATA_ROOT}; then
    echo "init: data root on XFS with pquota"
else
    echo "init: no XFS data root: dockerd keeps its data on the root's ext4"
fi
hostname cgroup2
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mkdir -p /etc/docker/tls
tar -xf /dev/vdb -C /etc/docker/tls
# containerd first: under emulation it starts slower than dockerd waits for its own (10 s)
containerd --log-level warn &
n=0
while [ ! -S /run/containerd/containerd.sock ] && [ $n -lt 600 ]; do sleep 0.2; n=$((n + 1)); done
dockerd --containerd /run/containerd/containerd.sock \\
    -H tcp://0.0.0.0:{VM_DOCKER_PORT} --tlsverify --tlscacert /etc/docker/tls/ca.pem \\
    --tlscert /etc/docker/tls/server.pem --tlskey /etc/docker/tls/server-key.pem \\
    --bridge none --iptables=false --ip-masq=false --log-level warn &
echo "init: dockerd started"
while true; do wait; sleep 5; done
"""

_KERNEL_PAYLOADS = ((b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"),
                    (b"\x1f\x8b\x08", "gzip"))


def _decompress(kind: str, data: bytes) -> bytes:
    if kind == "xz":
        return lzma.LZMADecompressor().decompress(data)
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    # zstd: no module in the standard library; the CLI stops at the frame's end
    return subprocess.run(["zstd", "-dcq"], input=data, capture_output=True,
                          check=False).stdout


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed kernel (an ELF file) inside a ``bzImage`` (``vmlinuz``).

    Under emulation qemu boots it much faster than the bzImage, which decompresses itself.
    Tries each xz, zstd or gzip magic found, in that order, until one gives an ELF file.
    """
    for magic, kind in _KERNEL_PAYLOADS:
        start = bzimage.find(magic)
        while start != -1:
            try:
                out = _decompress(kind, bzimage[start:])
            except (lzma.LZMAError, zlib.error, EOFError, OSError):
                out = b""
            if out[:4] == b"\x7fELF":
                return out
            start = bzimage.find(magic, start + 1)
    raise EngineError("no compressed kernel (xz, zstd or gzip) found in the bzImage")


def _cpio(files: list[tuple[str, int, bytes]]) -> bytes:
    """A ``newc`` cpio archive of ``(name, mode, data)`` (a device's data is its
    ``(major, minor)`` as two bytes), as the kernel unpacks an initramfs."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*files, ("TRAILER!!!", 0, b"")], start=1):
        rdev = (0, 0)
        if stat.S_ISCHR(mode):
            rdev, data = (data[0], data[1]), b""
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _module_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The ``.ko`` files of ``wanted`` and of their dependencies, dependencies first (from the
    ``modules.dep`` that ``depmod`` wrote in ``modules_dir``)."""
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    order: list[str] = []

    def add(path: str) -> None:
        for dep in deps.get(path, []):
            add(dep)
        if path not in order:
            order.append(path)

    for name in wanted:
        if name not in by_name:
            raise EngineError(f"the VM's kernel has no module {name}")
        add(by_name[name])
    return [modules_dir / p for p in order]


def _initramfs(modules_dir: Path) -> bytes:
    modules = _module_order(modules_dir, VM_BOOT_MODULES)
    names = [p.name.split(".ko")[0] for p in modules]
    if any(p.name != n + ".ko" for p, n in zip(modules, names)):
        raise EngineError("the VM's kernel modules are compressed: busybox insmod needs .ko")
    files = [(d, stat.S_IFDIR | 0o755, b"") for d in ("bin", "dev", "proc", "lib", "newroot")]
    files += [("dev/console", stat.S_IFCHR | 0o600, bytes([5, 1])),
              ("bin/busybox", stat.S_IFREG | 0o755, Path(BUSYBOX_BINARY).read_bytes()),
              ("init", stat.S_IFREG | 0o755,
               _VM_INITRAMFS_INIT.format(modules=" ".join(names)).encode())]
    files += [(f"lib/{p.name}", stat.S_IFREG | 0o644, p.read_bytes()) for p in modules]
    return _cpio(files)


def _unmount_under(path: Path) -> None:
    """Lazily unmount whatever is mounted under ``path`` (debootstrap's /proc and /sys when
    it failed), deepest first, so that removing ``path`` removes only its own files."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    marker = str(path) + "/"
    for mount in sorted((m for m in mounts if m.startswith(marker)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def _kernel_package() -> str:
    """The name of the kernel package ``linux-image-amd64`` depends on (apt's lists)."""
    for attempt in range(2):
        out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True,
                             text=True, check=False).stdout
        for line in out.splitlines():
            words = line.split()
            if words[:1] == ["Depends:"] and words[1].startswith("linux-image-"):
                return words[1]
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True, stdin=subprocess.DEVNULL,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    raise EngineError("apt knows no kernel package behind linux-image-amd64")


def ensure_vm() -> bool:
    """The cgroup v2 VM under :data:`VM_DIR`, built once (with :data:`VM_HOST_PACKAGES`).

    Debian's kernel (``linux-image-amd64``'s package, uncompressed to ``vmlinux``), an
    initramfs of the host's static busybox and the modules the root's disk needs, and a
    ``debootstrap`` root of Debian 12 with :data:`VM_GUEST_PACKAGES` and the kernel's modules,
    as an ext4 image. Built in a temporary folder renamed at the end: a half-built VM never
    looks present. Returns True when it was built.
    """
    files = ("vmlinux", "initrd.cpio", "rootfs.img")
    stamp = VM_DIR / "recipe"
    if stamp.is_file() and stamp.read_text().strip() == VM_RECIPE \
            and all((VM_DIR / f).is_file() for f in files):
        if shutil.which("mkfs.xfs") is None:  # a cache built elsewhere: the data disk needs it
            _ensure_apt(("xfsprogs",))
        return False
    if os.geteuid() != 0:
        raise EngineError(f"the cgroup v2 VM is not built under {VM_DIR} and we are not root")
    _ensure_apt(VM_HOST_PACKAGES)
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vm-", dir=CACHE))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "download", "-qq", _kernel_package()], check=True, env=env,
                       cwd=work, stdin=subprocess.DEVNULL, capture_output=True)
        kernel = work / "kernel"
        subprocess.run(["dpkg-deb", "-x", str(next(work.glob("linux-image-*.deb"))),
                        str(kernel)], check=True)
        version = next((kernel / "lib" / "modules").iterdir()).name
        (work / "vmlinux").write_bytes(
            extract_vmlinux((kernel / "boot" / f"vmlinuz-{version}").read_bytes()))
        rootfs = work / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase",
                        "--include=" + ",".join(VM_GUEST_PACKAGES), VM_SUITE, str(rootfs),
                        _debian_mirror()], check=True, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True)
        modules = rootfs / "usr" / "lib" / "modules" / version
        shutil.copytree(kernel / "lib" / "modules" / version, modules)
        subprocess.run(["chroot", str(rootfs), "depmod", version], check=True,
                       capture_output=True)
        (work / "initrd.cpio").write_bytes(_initramfs(modules))
        (rootfs / "init").write_text(_VM_INIT)
        (rootfs / "init").chmod(0o755)
        (rootfs / "etc" / "hostname").write_text("cgroup2\n")
        for deb in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            deb.unlink()
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(rootfs),
                        str(work / "rootfs.img"), "4G"], check=True, capture_output=True)
        _unmount_under(rootfs)
        shutil.rmtree(rootfs)
        shutil.rmtree(kernel)
        for deb in work.glob("*.deb"):
            deb.unlink()
        stamp_tmp = work / "recipe"
        stamp_tmp.write_text(VM_RECIPE + "\n")
    except (subprocess.CalledProcessError, StopIteration, OSError, EngineError) as error:
        _unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
        detail = getattr(error, "stderr", None) or b""
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
        raise EngineError(f"building the cgroup v2 VM failed: {error} {detail[-2000:]}") \
            from error
    work.chmod(0o755)  # mkdtemp's is 0700
    shutil.rmtree(VM_DIR, ignore_errors=True)
    work.rename(VM_DIR)
    return True


def make_certificates(folder: Path, names: tuple[str, ...] = ("ca",)) -> None:
    """Test-made TLS files in ``folder``: an authority per name of ``names`` (``NAME.pem``,
    ``NAME-key.pem``), and, signed by the first, ``server.pem`` (for 127.0.0.1 and localhost)
    and ``client.pem`` (each with its ``-key.pem``). Valid for two days. The keys are P-256
    ones: an emulated engine's TLS handshake takes seconds with RSA's."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for name in names:
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-days", "2",
                "-subj", f"/CN={name}", "-keyout", f"{name}-key.pem", "-out", f"{name}.pem")
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                       "extendedKeyUsage=serverAuth\n"),
                            ("client", "extendedKeyUsage=clientAuth\n")):
        (folder / f"{name}.ext").write_text(extension)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", f"/CN={name}",
                "-keyout", f"{name}-key.pem", "-out", f"{name}.csr")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{names[0]}.pem", "-CAkey",
                f"{names[0]}-key.pem", "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
                "-extfile", f"{name}.ext")


def _size_bytes(size: str) -> int:
    """``"4G"`` -> bytes (a size with an optional K, M or G suffix, powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if size[-1:].upper() in units:
        return int(size[:-1]) * units[size[-1].upper()]
    return int(size)


def _die_with_parent() -> None:
    """In a child before its exec: SIGKILL when the thread that started it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class VmEngine:
    """Docker 20.10 on cgroup v2: a Debian 12 VM (:func:`ensure_vm`) under qemu's emulation,
    reached on ``tcp://127.0.0.1:PORT`` with verified TLS.

    Under ``root``: ``disk.qcow2`` (a copy-on-write layer over the cached root image, so the
    cache stays clean), ``data.img`` (the data root's disk: a sparse file made with
    ``mkfs.xfs`` at a fresh start, mounted with ``pquota`` in the VM at :data:`VM_DATA_ROOT`,
    so that overlay2 offers a storage quota), ``tls/`` (a CA, the engine's certificate and a client's, made at the
    first start), ``tls.tar`` (the engine's part, the VM's second disk), ``port`` (kept from
    start to start, so that an engine killed and started again has the same URL) and
    ``console.log``. This machine's ``/dev/kvm`` cannot boot a stock kernel, hence
    ``-accel tcg``: the boot takes 10 to 40 s.

    :meth:`kill` SIGKILLs qemu (the engine lost, its containers with it); a later
    :meth:`start` boots the same disk again (dockerd sees its containers exited).
    :meth:`stop` SIGKILLs qemu too and drops the disk: the next start is a fresh VM.
    With ``tied`` (the default) qemu gets SIGKILL when the thread that started it ends
    (``PR_SET_PDEATHSIG``): a killed test run leaves no VM.
    """

    kind = VM_KIND

    def __init__(self, name: str, root: str | os.PathLike, tied: bool = True):
        self.name = name
        self.root = Path(root).absolute()
        self.tied = tied
        self.disk = self.root / "disk.qcow2"
        self.data = self.root / "data.img"
        self.tls_dir = self.root / "tls"
        self.log_path = self.root / "console.log"
        self._proc: subprocess.Popen | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<VmEngine {self.name} {self.url} {state}>"

    @property
    def port(self) -> int:
        """The host's port forwarded to the VM's dockerd (chosen free at the first start)."""
        path = self.root / "port"
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            self.root.mkdir(parents=True, exist_ok=True)
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            path.write_text(str(port))
            return port

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def client_tls(self) -> dict:
        """A client's TLS files, as a ``docker_instances`` entry's ``tls`` takes them."""
        return {"ca_cert": str(self.tls_dir / "ca.pem"),
                "client_cert": str(self.tls_dir / "client.pem"),
                "client_key": str(self.tls_dir / "client-key.pem"), "verify": True}

    def _qemu_pids(self) -> list[int]:
        marker = str(self.root) + "/"
        return [p for p in _all_pids() if _alive(p)
                and os.path.basename((_cmdline(p) or [""])[0]).startswith("qemu-system")
                and any(marker in a for a in _cmdline(p))]

    @property
    def pid(self) -> int | None:
        """Pid of this engine's live qemu, or None."""
        pids = self._qemu_pids()
        return pids[0] if pids else None

    def is_running(self) -> bool:
        return self.pid is not None

    def leftovers(self, kind: str = "") -> list[int]:
        return []  # everything of the engine is inside qemu

    def answers(self, timeout: float = 10.0) -> bool:
        """True when the VM's engine answers a ping within ``timeout`` (under emulation a
        TLS handshake alone may take seconds)."""
        return (self.tls_dir / "ca.pem").exists() \
            and engine_answers(self.url, timeout, tls=self.client_tls)

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _prepare_files(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.tls_dir / "client.pem").exists():
            make_certificates(self.tls_dir)
        with tarfile.open(self.root / "tls.tar", "w") as tar:
            for name in ("ca.pem", "server.pem", "server-key.pem"):
                tar.add(self.tls_dir / name, arcname=name)
        if not self.disk.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            str(VM_DIR / "rootfs.img"), str(self.disk)], check=True,
                           capture_output=True)
        if not self.data.exists():  # made whole, then renamed: a half-made disk never counts
            made = self.root / "data.img.tmp"
            with open(made, "wb") as disk:
                disk.truncate(_size_bytes(VM_DATA_SIZE))
            subprocess.run(["mkfs.xfs", "-q", "-f", "-L", "data", str(made)], check=True,
                           capture_output=True)
            made.rename(self.data)

    def _command(self) -> list[str]:
        return ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max",
                "-smp", str(VM_CPUS), "-m", str(VM_MEMORY_MB), "-nodefaults", "-no-reboot",
                "-display", "none", "-serial", f"file:{self.log_path}",
                "-kernel", str(VM_DIR / "vmlinux"), "-initrd", str(VM_DIR / "initrd.cpio"),
                "-append", VM_APPEND,
                "-drive", f"file={self.disk},if=virtio,format=qcow2",
                "-drive", f"file={self.root / 'tls.tar'},if=virtio,format=raw,readonly=on",
                "-drive", f"file={self.data},if=virtio,format=raw",
                "-netdev", f"user,id=n,hostfwd=tcp:127.0.0.1:{self.port}-:{VM_DOCKER_PORT}",
                "-device", "virtio-net-pci,netdev=n"]

    def start(self, timeout: float = 300) -> "VmEngine":
        """Boot the VM unless its engine answers already; wait until it answers."""
        if self.answers():
            return self
        ensure_vm()
        self._kill_pids(self._qemu_pids())
        self._prepare_files()
        self._proc = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.root / "qemu.log", "wb"), close_fds=True,
            preexec_fn=_die_with_parent if self.tied else None,
            start_new_session=not self.tied)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self._proc.poll() is not None or time.monotonic() >= deadline:
                code = self._proc.poll()
                self.kill()
                how = "killed" if code is None else f"qemu ended, exit code {code}"
                raise EngineError(
                    f"cgroup v2 engine {self.name} at {self.url} did not answer within "
                    f"{timeout}s ({how})"
                    f"; end of {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.5)
        return self

    def _kill_pids(self, pids: list[int]) -> None:
        for p in pids:
            _signal(p, signal.SIGKILL)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        _wait_dead(pids, 10)

    def kill(self) -> None:
        """SIGKILL qemu at once (for fault tests): the engine and its containers are gone."""
        self._kill_pids(self._qemu_pids())
        self._proc = None

    def stop(self, timeout: float = 20) -> None:
        """SIGKILL qemu and drop the VM's disks (nothing of it is kept)."""
        self.kill()
        self.disk.unlink(missing_ok=True)
        self.data.unlink(missing_ok=True)

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, timeout: float = 300) -> "VmEngine":
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> "VmEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def make_engine(kind: str, name: str, root: str | os.PathLike):
    """A private engine of ``kind`` (one of :data:`KINDS` or :data:`VM_KIND`) named ``name``
    under ``root``."""
    classes = {"docker20": PrivateEngine, "docker28": Docker28Engine, "podman": PodmanEngine,
               VM_KIND: VmEngine}
    if kind not in classes:
        raise ValueError(f"unknown engine kind {kind!r}: one of {', '.join(classes)}")
    return classes[kind](name, root)


#: The first letter of an engine's directory names its kind (e1 docker20, d1 docker28, p1 podman,
#: v1 cgroup2).
KIND_PREFIXES = {"docker20": "e", "docker28": "d", "podman": "p", VM_KIND: "v"}


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


def docker_client(url: str, tls: dict | None = None, timeout: float = 60,
                  version: str | None = None):
    """A docker-py ``APIClient`` for the engine at ``url``; ``tls`` as :attr:`VmEngine.client_tls`
    (the given CA only, and the client's certificate); ``version`` by default the one the
    library negotiates (:func:`api_version`)."""
    import docker

    if version is None:
        version = api_version(url, tls)
    options = {}
    if tls:
        options["tls"] = docker.tls.TLSConfig(
            client_cert=(tls["client_cert"], tls["client_key"]), ca_cert=tls["ca_cert"],
            verify=tls["ca_cert"])
    client = docker.APIClient(base_url=url, timeout=timeout, version=version, **options)
    if tls:
        client.trust_env = False  # else requests lets REQUESTS_CA_BUNDLE win over the CA
    return client


def api_version(url: str, tls: dict | None = None) -> str:
    """The Engine API version the library speaks to the engine at ``url`` (its negotiation,
    :func:`backend.docker._features.negotiate`): for docker-py clients of tests and scripts."""
    from backend.docker._features import MIN_API_VERSION, negotiate

    with docker_client(url, tls, 10, MIN_API_VERSION) as client:
        return negotiate(client.version(api_version=False), url)



def build_busybox_image(url: str, tag: str = BUSYBOX_TAG, timeout: float = 120,
                        tls: dict | None = None) -> str:
    """Build the ``FROM scratch`` busybox image (``tests/images/busybox``) on the engine at
    ``url`` and return its id.  Quick when the engine has it cached.

    The build context is a temporary copy of that directory plus ``/bin/busybox`` (which must be
    the static binary of busybox-static); ``tls`` as :func:`docker_client` takes it.
    """
    if not os.path.exists(BUSYBOX_BINARY):
        raise EngineError(f"{BUSYBOX_BINARY} is missing: run ensure_packages()")
    with tempfile.TemporaryDirectory(prefix="djm-bb-") as ctx:
        shutil.copy(BUSYBOX_DOCKERFILE_DIR / "Dockerfile", ctx)
        shutil.copy(BUSYBOX_BINARY, os.path.join(ctx, "busybox"))
        client = docker_client(url, tls, timeout, api_version(url, tls))
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
        if isinstance(eng, VmEngine):
            eng.tied = False  # outlives this command, until engines.py stop
        eng.start(timeout=args.timeout)
        if not args.no_image:
            build_busybox_image(eng.url, tls=getattr(eng, "client_tls", None))

    _each(engines, start)
    for eng in engines:
        print(f"{eng.name} {eng.url}")
    return 0


def _cmd_stop(args) -> int:
    engines = engines_under(args.root, (*KINDS, VM_KIND))
    _each(engines, lambda eng: eng.purge() if args.purge else eng.stop())
    for eng in engines:
        print(f"{eng.name} {'removed' if args.purge else 'stopped'}")
    return 0


def _cmd_urls(args) -> int:
    for eng in engines_under(args.root, (*KINDS, VM_KIND)):
        if eng.answers():
            print(eng.url)
    return 0


def _cmd_ensure(args) -> int:
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - {*KINDS, VM_KIND}
    if unknown:
        raise EngineError(f"unknown engine kinds {sorted(unknown)}: "
                          f"{', '.join((*KINDS, VM_KIND))}")
    installed = ensure_kinds(kinds, docs=not args.no_docs)
    print("installed for " + " ".join(installed) if installed else "packages present")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engines.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ensure", help="install what the engine kinds and the docs need")
    p.add_argument("--kinds", default=",".join((*KINDS, VM_KIND)),
                   help="comma-separated engine kinds")
    p.add_argument("--no-docs", action="store_true", help="not graphviz")
    p.set_defaults(func=_cmd_ensure)
    p = sub.add_parser("start", help="start engines e1..eN under ROOT (those not running)")
    p.add_argument("--count", type=int, default=2)
    p.add_argument("--kind", choices=(*KINDS, VM_KIND), default="docker20")
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
