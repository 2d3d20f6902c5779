"""An sshd of the test run's own on 127.0.0.1, in front of private engines, for ssh:// tests.

Everything lives in one folder: the host key, the client keys, ``authorized_keys``, the
server's and the client's configuration, and a folder holding an ``ssh`` that runs the
system's ``/usr/bin/ssh -F <our client config>`` (put first on ``PATH``, so that the manager's
children use our keys and our ``known_hosts``, never the user's ``~/.ssh``).

Client host aliases (``ssh://ALIAS``):

* ``djm-<engine>``: root with the good key; ``docker`` there talks to that private engine;
* ``djm-badhost``: the same server, with a ``known_hosts`` that holds another host key;
* ``djm-refused``: a key the server does not know;
* ``djm-nodocker``: a key whose command finds no ``docker``.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

from helpers import descendants

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "djm-test", "-f",
                    str(path)], check=True, stdin=subprocess.DEVNULL)
    return path.with_suffix(".pub").read_text().strip()


class TestSshd:
    """See the module docstring; :meth:`start` and :meth:`stop` the server."""

    __test__ = False  # not a test class

    def __init__(self, folder: Path, engines: Dict[str, str]):
        """``engines``: alias suffix -> the private engine's unix URL."""
        self.folder = folder
        self.engines = engines
        self.port = free_port()
        self.process: Optional[subprocess.Popen] = None
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "other_host_key", "client_key", "refused_key",
                     "nodocker_key"):
            for path in (folder / name, folder / (name + ".pub")):
                if path.exists():
                    path.unlink()
        host_public = _keygen(folder / "host_key")
        other_host_public = _keygen(folder / "other_host_key")
        client_public = _keygen(folder / "client_key")
        _keygen(folder / "refused_key")
        nodocker_public = _keygen(folder / "nodocker_key")
        self.bin = folder / "bin"
        self.bin.mkdir(exist_ok=True)
        keys: List[str] = []
        for name, url in engines.items():
            script = folder / f"engine-{name}.sh"
            script.write_text(f"#!/bin/sh\nDOCKER_HOST={url}; export DOCKER_HOST\n"
                              "exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n")
            script.chmod(0o755)
        # one key serves every engine: the alias's SetEnv picks the engine's wrapper
        keys.append(f'command="{folder}/dispatch.sh" {client_public}')
        (folder / "dispatch.sh").write_text(
            "#!/bin/sh\n"
            f'exec "{folder}/engine-${{DJM_ENGINE:-none}}.sh"\n')
        (folder / "dispatch.sh").chmod(0o755)
        (folder / "engine-none.sh").write_text("#!/bin/sh\necho 'no engine named' >&2\nexit 3\n")
        (folder / "engine-none.sh").chmod(0o755)
        keys.append(f'command="PATH=/nonexistent /bin/sh -c \\"$SSH_ORIGINAL_COMMAND\\"" '
                    f"{nodocker_public}")
        (folder / "authorized_keys").write_text("\n".join(keys) + "\n")
        (folder / "sshd_config").write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {folder}/host_key
PidFile none
AuthorizedKeysFile {folder}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
StrictModes no
UsePAM no
AcceptEnv DJM_ENGINE
# the login shell (bash) would read ~/.bashrc for a command run by sshd, at a shell level
# below 2: this machine's may be slow, and is none of the test's business
SetEnv SHLVL=1
MaxStartups 100:30:200
LogLevel ERROR
""")
        (folder / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_public}\n")
        (folder / "wrong_known_hosts").write_text(
            f"[127.0.0.1]:{self.port} {other_host_public}\n")
        hosts = []
        for name in engines:
            hosts.append(f"Host djm-{name}\n  IdentityFile {folder}/client_key\n"
                         f"  SetEnv DJM_ENGINE={name}\n")
        hosts.append(f"Host djm-badhost\n  IdentityFile {folder}/client_key\n"
                     f"  UserKnownHostsFile {folder}/wrong_known_hosts\n")
        hosts.append(f"Host djm-refused\n  IdentityFile {folder}/refused_key\n")
        hosts.append(f"Host djm-nodocker\n  IdentityFile {folder}/nodocker_key\n")
        (folder / "ssh_config").write_text("\n".join(hosts) + f"""
Host djm-*
  HostName 127.0.0.1
  Port {self.port}
  User root
  IdentitiesOnly yes
  StrictHostKeyChecking yes
  UserKnownHostsFile {folder}/known_hosts
  GlobalKnownHostsFile /dev/null
  IdentityAgent none
""")
        ssh = self.bin / "ssh"
        ssh.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F "{folder}/ssh_config" "$@"\n')
        ssh.chmod(0o755)

    def url(self, name: str) -> str:
        return f"ssh://djm-{name}"

    @property
    def path(self) -> str:
        """``PATH`` with our ``ssh`` first."""
        return f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"

    def start(self) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "sshd.log", "ab"), start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.folder / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not listen within 15 s")

    def stop(self) -> None:
        """Stops the server and every session it serves (what it forked)."""
        if self.process is None:
            return
        for pid in [self.process.pid] + sorted(descendants(self.process.pid)):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        self.process.wait(10)
        self.process = None


def ssh_processes() -> List[int]:
    """Pids of live ssh clients and masters of the manager (their control folders)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                cmdline = stream.read()
            with open(f"/proc/{entry}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if b"djm-ssh-" in cmdline:
            found.append(int(entry))
    return found
