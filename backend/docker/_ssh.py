"""Engines reached over ``ssh://``, as the docker CLI reaches them (see docs/engines.rst).

Each connection is the system's ``ssh`` running ``docker system dial-stdio`` on the host,
whose stdin and stdout are one end of a :func:`socket.socketpair`; the other end is the
connection's socket for :mod:`backend.docker._http`: a real socket, so a hijacked attach can be
half-closed, read with ``MSG_DONTWAIT`` and passed to another process like a unix or tcp one.

Cost: every process shares one ssh connection per engine (``ControlMaster=auto`` with a
control socket in a private folder of that process), so that a new connection is a new channel
of it, with no handshake; a process with more than :data:`CHANNELS_PER_CONNECTION` connections
open at once opens one more shared connection for the next ones (sshd's ``MaxSessions``).

Host keys, keys, the agent and ``~/.ssh/config`` are those of ``ssh``; ``BatchMode=yes`` makes
a missing key or an unknown host an error, never a prompt.

Lifetimes: an ssh process ends when its socket is closed (end of file on its stdin); those that
ended are reaped at the next connection and when the last client of an engine in the process
closes. That last close also tells the shared master to stop (``ssh -O stop``: it takes no new
channel and exits :data:`CONTROL_PERSIST` seconds after its last one ended), so a passed attach
still being read elsewhere is not cut; when no channel of the process is left, it ends at once
(``ssh -O exit``), as it does when the process exits (an exit handler, which multiprocessing's
children run too). A process that is killed leaves the master for :data:`CONTROL_PERSIST`
seconds after its last channel ended.

Errors: when a connection fails, ssh's own last line (a host key mismatch, a refused key,
"docker: command not found") is the error's text. Called from any thread of
:class:`backend.docker._http.Client`.
"""
from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

from backend.model import parse_ssh_url

logger = logging.getLogger("backend")

#: Seconds the shared ssh connection stays open once its last channel ended.
CONTROL_PERSIST = 30
#: Channels at most over one shared connection: sshd refuses more than its ``MaxSessions``
#: (10 by default), so a process with more connections open at once (attaches of running jobs,
#: idle keep-alive ones) opens another shared connection.
CHANNELS_PER_CONNECTION = 8
#: Bytes of ssh's error output kept to explain a failure.
_STDERR_KEPT = 8192


class _Master:
    """The shared ssh connections of one process to one engine: their control folder, and
    the ssh processes of the channels made through each (a slot: one control socket)."""

    def __init__(self, destination: List[str]):
        self.destination = destination
        self.folder = tempfile.mkdtemp(prefix="djm-ssh-")
        self.users = 0
        self.slots: List[List[subprocess.Popen]] = []

    def options(self, slot: int, timeout: Optional[float]) -> List[str]:
        connect = max(1, int(timeout or 30))
        return ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.folder}/{slot}",
                "-o", f"ControlPersist={CONTROL_PERSIST}", "-o", "BatchMode=yes",
                "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={connect}"]

    def reap(self) -> None:
        """Waits for the ssh processes that ended (the caller holds the lock)."""
        for slot in self.slots:
            for process in [p for p in slot if p.poll() is not None]:
                slot.remove(process)
                if process.stderr is not None:
                    process.stderr.close()

    def free_slot(self) -> int:
        """A connection with room for one more channel (the caller holds the lock)."""
        for index, slot in enumerate(self.slots):
            if len(slot) < CHANNELS_PER_CONNECTION:
                return index
        self.slots.append([])
        return len(self.slots) - 1

    def running(self) -> List["subprocess.Popen"]:
        return [process for slot in self.slots for process in slot]

    def stop(self, cut: bool = False) -> None:
        """Ends the shared connections: at once if ``cut`` or once no channel of this
        process is open (``ssh -O exit``); else they take no new channel and end
        :data:`CONTROL_PERSIST` seconds after their last one (``ssh -O stop``: a passed
        attach still being read elsewhere is not cut)."""
        deadline = time.monotonic() + 1
        while not cut and time.monotonic() < deadline:
            self.reap()  # the connections just closed end within milliseconds
            if not self.running():
                cut = True
            else:
                time.sleep(0.02)
        for slot in range(len(self.slots)):
            try:
                subprocess.run(["ssh", *self.options(slot, 5), "-O", "exit" if cut else "stop",
                                *self.destination],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=10, start_new_session=True)
            except (OSError, subprocess.SubprocessError) as error:
                logger.debug("ssh -O for %s: %s", self.destination, error)
        shutil.rmtree(self.folder, ignore_errors=True)


_lock = threading.Lock()
_masters: Dict[Tuple[int, str], _Master] = {}
#: ssh processes still running when their engine's last client closed, reaped later.
_orphans: List["subprocess.Popen"] = []


def _reap_orphans() -> None:
    """(The caller holds the lock.)"""
    running = [process for process in _orphans if process.poll() is None]
    for process in _orphans:
        if process.returncode is not None and process.stderr is not None:
            process.stderr.close()
    _orphans[:] = running


def _stop_all() -> None:
    """At the process's exit: stops the shared connections its clients left open (a child
    process ends without closing every client)."""
    with _lock:
        ours = [key for key in _masters if key[0] == os.getpid()]
        masters = [_masters.pop(key) for key in ours]
    for master in masters:
        master.stop(cut=True)


_exit_handler_of: List[int] = []  # the pid that registered it (a forked child does again)


def _at_exit() -> None:
    """Registers :func:`_stop_all` once per process (the caller holds the lock):
    multiprocessing's children end with ``os._exit`` after their finalizers, never atexit's,
    and a child's finalizers are those it registered itself."""
    if _exit_handler_of != [os.getpid()]:
        _exit_handler_of[:] = [os.getpid()]
        atexit.register(_stop_all)
        multiprocessing.util.Finalize(None, _stop_all, exitpriority=0)


class Dialer:
    """Makes the connections of one :class:`backend.docker._http.Client` to an ``ssh://`` engine."""

    def __init__(self, url: str):
        host, user, port = parse_ssh_url(url)
        self.url = url
        self.destination = ([] if port is None else ["-p", str(port)]) + \
            ([] if user is None else ["-l", user]) + ["--", host]
        self._master: Optional[_Master] = None

    def _shared(self) -> _Master:
        """This process's master for the engine (made at the first connection)."""
        key = (os.getpid(), self.url)
        with _lock:
            if self._master is None:
                master = _masters.get(key)
                if master is None:
                    master = _masters[key] = _Master(self.destination)
                    _at_exit()
                master.users += 1
                self._master = master
            return self._master

    def connect(self, timeout: Optional[float]) -> Tuple[socket.socket, "subprocess.Popen"]:
        """A new connection: our end of the socket pair, and its ssh process.

        Raises:
            OSError: ssh could not be started.
        """
        master = self._shared()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _lock:
                master.reap()
                _reap_orphans()
                slot = master.free_slot()
                process = subprocess.Popen(
                    ["ssh", *master.options(slot, timeout), *self.destination,
                     "docker", "system", "dial-stdio"],
                    stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.PIPE,
                    close_fds=True,
                    start_new_session=True)  # a Ctrl-C in the terminal is not for it
                master.slots[slot].append(process)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(timeout)
        return ours, process

    def close(self) -> None:
        """This client is done; the last one of the process stops the shared connection."""
        with _lock:
            master, self._master = self._master, None
            if master is None:
                return
            master.users -= 1
            last = master.users == 0
            if last:
                _masters.pop((os.getpid(), self.url), None)
        if last:
            master.stop()
            with _lock:
                _orphans.extend(master.running())  # (passed attaches still being read)


def explain(process: "subprocess.Popen", error: BaseException) -> BaseException:
    """The error of a failed connection, with ssh's last line as its text when ssh ended
    with an error (255: ssh's own, or the remote command's status)."""
    try:
        status = process.wait(timeout=2)  # it ends right after closing its end
    except subprocess.TimeoutExpired:
        return error  # ssh runs on: the engine itself is silent
    line = last_line(_read_stderr(process))
    if status == 0 or not line:
        return error
    failure = ConnectionError(line if line.startswith("ssh: ") else f"ssh: {line}")
    failure.__cause__ = error
    return failure


def _read_stderr(process: "subprocess.Popen") -> bytes:
    if process.stderr is None:
        return b""
    try:
        os.set_blocking(process.stderr.fileno(), False)
        return process.stderr.read(_STDERR_KEPT) or b""
    except (OSError, ValueError):
        return b""


def last_line(data: bytes) -> str:
    """The last non-blank line of ``data``, printable and at most 300 characters."""
    text = data.decode("utf-8", "replace")
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
    if not lines:
        return ""
    line = "".join(c if c.isprintable() else "?" for c in lines[-1])
    return line if len(line) <= 300 else line[:300] + "…"
