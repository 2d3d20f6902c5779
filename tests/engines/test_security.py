"""Escape attempts from inside a real container: each must fail, and fail in the way the
hardening of docs/security.rst makes it fail (a specific error or value, so that removing a
protection fails the test). See docs/security.rst for the threat model."""
import base64
import io
import os
import socket
import uuid

import docker
import pytest

from backend import JobManager, JobManagerSync, Task
from helpers import IMAGE, PREFIX, ok_script, shell


def run(manager, task, inputdata=None):
    return JobManagerSync(manager).new_job(task, inputdata, timeout=60)


def inside(manager, script, image=IMAGE, **options):
    """Runs ``script`` (stderr joined to stdout) in a container; returns what it printed,
    byte for byte (base64 through the JSON result), then ``rc=<exit status>``."""
    script = ('out=$( { ' + script + '\n echo "rc=$?"; } 2>&1 | base64 | tr -d "\\n"); '
              'echo "{\\"result\\": \\"success\\", \\"out\\": \\"$out\\"}"')
    task = Task(image, command=["sh", "-c", script], **options)
    result = run(manager, task)
    assert result["result"] == "success", result
    return base64.b64decode(result["out"]).decode("utf-8", "replace")


# -- network -------------------------------------------------------------------------------

def test_only_loopback_and_no_route(manager):
    assert inside(manager, "ls /sys/class/net") == "lo\nrc=0\n"
    # /proc/net/route: its header line only; `ip route`: nothing
    routes = inside(manager, "cat /proc/net/route").splitlines()
    assert len(routes) == 2 and routes[0].startswith("Iface") and routes[1] == "rc=0", routes
    assert inside(manager, "ip route; ip -6 route") == "rc=0\n"


def test_host_loopback_port_is_unreachable(manager):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        # (not busybox wget: the static busybox of Debian 12 segfaults in it, host included)
        out = inside(manager, f"nc -w 2 127.0.0.1 {port} </dev/null")
        # the container's 127.0.0.1 is its own loopback: nothing listens there
        assert out == "nc: can't connect to remote host (127.0.0.1): Connection refused\nrc=1\n"
        with pytest.raises(BlockingIOError):  # no connection ever reached the test's port
            listener.accept()


# -- file systems --------------------------------------------------------------------------

def test_read_only_root(manager):
    out = inside(manager, "touch /x; mkdir /y; echo z > /bin/z", read_only=True)
    assert out.count("Read-only file system") == 3, out


def test_tmp_is_writable_and_capped(manager):
    # 100 MB into the 64 MiB tmpfs (the fsize ulimit, 128 MiB, is not reached first);
    # memory is raised so that the tmpfs pages, charged to the container, do not OOM it
    out = inside(manager, "echo hi > /tmp/small && cat /tmp/small; "
                          "head -c 100000000 /dev/zero > /tmp/big; echo \"head=$?\"; "
                          "wc -c < /tmp/big; df -k /tmp | tail -1",
                 read_only=True, limits={"memory": 200})
    lines = out.splitlines()
    assert lines[0] == "hi", out
    # ENOSPC, which busybox head reports as an I/O error on its output
    assert "head: standard output: I/O error" in out and "head=1" in out, out
    assert 60 << 20 < int(lines[-3]) <= 64 << 20, out  # the tmpfs is full at 64 MiB, no more
    assert lines[-2].split()[1:5] == [str(64 << 10), str(64 << 10), "0", "100%"], out  # df -k


def test_task_directory_is_read_only(manager, tmp_path):
    (tmp_path / "given.txt").write_text("original\n")
    out = inside(manager, "cat /task/given.txt; echo x > /task/new; echo y >> /task/given.txt; "
                          "rm /task/given.txt; mkdir /task/d",
                 directory=str(tmp_path))
    assert out.startswith("original\n"), out
    assert out.count("Read-only file system") == 4, out
    assert sorted(os.listdir(tmp_path)) == ["given.txt"]
    assert (tmp_path / "given.txt").read_text() == "original\n"


@pytest.mark.parametrize("directory", ["/", "/run", "/var/run"])
def test_task_directory_cannot_expose_the_host(manager, directory):
    with pytest.raises(ValueError, match="would expose the host or the Docker socket"):
        manager.new_job(shell(ok_script(), directory=directory), None, lambda *args: None)


# -- privileges ----------------------------------------------------------------------------

def test_mount_and_unshare_fail(manager):
    out = inside(manager, "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m; echo \"mount=$?\"; "
                          "grep -c /tmp/m /proc/mounts; "
                          "unshare -U true; echo \"userns=$?\"; unshare -m true; echo \"mntns=$?\"")
    assert "mount: permission denied (are you root?)" in out and "mount=1" in out, out
    assert "\n0\n" in out, out  # /proc/mounts has no /tmp/m
    # EPERM from the default seccomp profile and the missing CAP_SYS_ADMIN
    assert "unshare: unshare(0x10000000): Operation not permitted" in out, out  # CLONE_NEWUSER
    assert "unshare: unshare(0x20000): Operation not permitted" in out, out  # CLONE_NEWNS
    assert "userns=1" in out and "mntns=1" in out, out


def test_chown_and_mknod_fail_as_root(manager):
    out = inside(manager, "id -u; touch /f; chown 1234:1234 /f; echo \"chown=$?\"; "
                          "mknod /null2 c 1 3; echo \"mknod=$?\"; ls -n /f; ls /null2")
    lines = out.splitlines()
    assert lines[0] == "0", out  # root inside, but without capabilities
    assert "chown: /f: Operation not permitted" in out and "chown=1" in out, out
    assert "mknod: /null2: Operation not permitted" in out and "mknod=1" in out, out
    assert any(line.split()[2:4] == ["0", "0"] for line in lines if line.endswith(" /f")), out
    assert "ls: /null2: No such file or directory" in out, out


@pytest.fixture
def setuid_image(engines):
    """An image with a setuid-root copy of busybox at /s/busybox, on engine e1 only.

    The copy is named ``busybox``: a multi-call busybox called by another name finds no applet.
    """
    name = "security-suid-" + uuid.uuid4().hex[:8]
    dockerfile = (f"FROM {PREFIX}{IMAGE}\n"
                  "RUN mkdir /s && cp /bin/busybox /s/busybox && chmod u+s /s/busybox\n")
    with docker.APIClient(base_url=engines[0].url, version="1.41") as client:
        for chunk in client.build(fileobj=io.BytesIO(dockerfile.encode()), tag=PREFIX + name,
                                  rm=True, forcerm=True, decode=True):
            assert "error" not in chunk, chunk
        try:
            yield name
        finally:
            client.remove_image(PREFIX + name, force=True)


def test_setuid_binary_gives_no_privileges(instances, setuid_image):
    script = ("ls -l /s/busybox; /s/busybox id -u; "
              "/s/busybox grep -E '^(Uid|Gid|NoNewPrivs):' /proc/self/status; "
              "/s/busybox touch /root-only")
    with JobManager(instances[:1]) as manager:
        lines = inside(manager, script, image=setuid_image, user="1000:1000").splitlines()
    assert lines[0].startswith("-rwsr-xr-x") and lines[0].split()[2:4] == ["0", "0"], lines
    assert lines[1] == "1000", lines
    # busybox itself drops its effective uid for `id` or `grep`; without no-new-privileges
    # the saved set-user-id would still be 0 ("Uid: 1000 1000 0 1000"), ready to be taken back
    assert lines[2].split() == ["Uid:", "1000", "1000", "1000", "1000"], lines
    assert lines[3].split() == ["Gid:", "1000", "1000", "1000", "1000"], lines
    assert lines[4].split() == ["NoNewPrivs:", "1"], lines
    assert lines[5] == "touch: /root-only: Permission denied", lines


# -- what the container can see ------------------------------------------------------------

def test_no_docker_socket(manager):
    out = inside(manager, "ls /var/run/docker.sock /run/docker.sock; echo \"ls=$?\"; "
                          "find / -name 'docker.sock' 2>/dev/null; "
                          "find / -type s 2>/dev/null | grep -v '^/proc/' ")
    assert "ls: /var/run/docker.sock: No such file or directory" in out, out
    assert "ls: /run/docker.sock: No such file or directory" in out, out
    # no socket file anywhere (grep finds nothing: its exit status 1 is the last one)
    assert out.endswith("ls=1\nrc=1\n"), out


def test_host_environment_is_not_passed(instances, monkeypatch):
    name = "DJM_SECRET_" + uuid.uuid4().hex[:8].upper()
    value = "secret-" + uuid.uuid4().hex
    monkeypatch.setenv(name, value)
    # the manager, and its processes, start with the variable in their environment
    with JobManager(instances) as manager:
        out = inside(manager, "env", env={"GIVEN": "given-value"})
    assert "GIVEN=given-value" in out, out
    assert name not in out and value not in out, out


# -- resources -----------------------------------------------------------------------------

def test_fork_bomb_is_contained_and_the_engine_goes_on(instances):
    # the bomb churns processes; the shell samples its cgroup's pids.current with builtins
    # only (no fork needed: a count of /proc/[0-9]* is no snapshot while pids churn, and goes
    # past the limit) and reports on fd 3 (stderr), which is kept after the wall-time kill;
    # the bomb starts in a subshell, the shell's one fork, so that the shell itself never
    # meets the limit (a fork it made as the bomb filled the cgroup would end it, code 2)
    script = ("exec 3>&2 2>/dev/null; "
              "d=/sys/fs/cgroup/pids; [ -e $d/pids.current ] || d=/sys/fs/cgroup; "
              "read limit < $d/pids.max; f(){ f|f& }; (f) & most=0; i=0; "
              "while [ $i -lt 3000 ]; do read n < $d/pids.current; "
              "[ $n -gt $most ] && most=$n; i=$((i+1)); done; read events < $d/pids.events; "
              "echo \"limit=$limit most=$most events=$events\" >&3; while :; do :; done")
    with JobManager(instances[:1]) as manager:
        result = run(manager, shell(script, limits={"processes": 32, "hard_time": 5}))
        after = run(manager, shell(ok_script()))
    assert (result["result"], result["run"]["reason"]) == ("timeout", "wall_time"), result
    assert result["run"]["duration"] < 9, result
    report = result["run"]["stderr"].split("limit=")[1].split("\n")[0]
    limit, most, events = report.replace("most=", "").replace("events=", "").split(" ", 2)
    assert limit == "32", report
    assert int(most) <= 32, report  # never more processes than the limit
    # forks were refused at the limit: the bomb did reach it (the samples may miss the peak,
    # as the bomb's processes die and fork by turns)
    assert events.split()[0] == "max" and int(events.split()[1]) > 0, report
    assert after["result"] == "success" and after["run"]["host"] == result["run"]["host"], after


def test_memory_bomb(manager):
    # doubles a shell variable: builtins only
    result = run(manager, shell("a=x; while :; do a=$a$a; done", limits={"memory": 20}))
    assert (result["result"], result["run"]["reason"]) == ("overflow", "memory"), result


def test_disk_filler(manager):
    # the fsize ulimit (128 MiB) sends SIGXFSZ: exit status 128 + 25
    result = run(manager, shell("head -c 200000000 /dev/zero > /big"))
    assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result
    assert result["run"]["exit_code"] == 153, result


def test_stopped_job_still_ends_at_wall_time(manager):
    result = run(manager, shell("echo stopping >&2; kill -STOP $$; echo resumed >&2",
                                limits={"time": 1, "hard_time": 2}))
    assert (result["result"], result["run"]["reason"]) == ("timeout", "wall_time"), result
    assert 2 <= result["run"]["duration"] < 5, result
    assert "stopping" in result["run"]["stderr"] and "resumed" not in result["run"]["stderr"]
