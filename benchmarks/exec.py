"""Benchmark: code execution, the workload of a playground, a judge or an LLM code runner (see
docs/performance.rst, "Code execution").

A submission is a program in files and its stdin; its stdout and exit code come back. Two
workloads, each with two programs (a busybox ``sh`` script, and a Python script on the
Debian ``python3`` image of ``scripts/images.py``):

``one``
    one submission at a time, 0.5 s apart, as a user of a playground sends them; the
    latency of each, from the call to its result.
``judge``
    one submission checked once (one run, not timed), then run on 20 test cases (20
    stdins), all handed over at once 1.5 s later; the wall time until the last verdict.

Four contenders, in the same run on one engine, interleaved round after round: ours with
warm starts (``warm_containers: 2``), ours cold, epicbox 1.1's ``run()`` (the judge's cases
one after another: its API runs one sandbox per call) and hand-written docker-py (create,
files through the archive API, attach, start, input, output, wait, remove). The judge
workload has a fifth, ours configured for it: ``warm_containers: 20``, a warm container per
case of a submission (made for that workload only, so that its idle containers do not
weigh on the first). Ours runs with the default ``process_pool_size``. Prints p50 and p95
of each, and the ratios to epicbox; writes ``benchmarks/results/exec-KIND.json``.

epicbox 1.1 needs two work-arounds: one for urllib3 2 (:func:`_epicbox_work_around`), and on
Podman an explicit ``nofile`` rlimit (:func:`_epicbox_on_podman`).

    python benchmarks/exec.py --kind docker28 [--rounds 12] [--root /tmp/djm-exec]
"""
from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import struct
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "scripts"))

PREFIX = "backend-test-"
LIMITS = {"time": 5, "memory": 128}
PROGRAMS = {
    "sh": ("busybox", ["sh", "main.sh"],
           {"main.sh": 'read -r a b; echo $((a + b)); cat data.txt | wc -l\n',
            "data.txt": "x\n" * 10}),
    "python": ("python", ["python3", "main.py"],
               {"main.py": "import sys\na, b = map(int, sys.stdin.read().split())\n"
                           "print(a + b)\nprint(len(open('data.txt').read().splitlines()))\n",
                "data.txt": "x\n" * 10}),
}
PAUSE = 0.5
CASES = 20


def expected(i):
    return f"{i + 1}\n10\n"


def stdin_of(i):
    return f"{i} 1\n"


# -- contenders ------------------------------------------------------------------------------

class Ours:
    def __init__(self, url, warm):
        from backend import JobManager, JobManagerBuffer, JobManagerSync, Task

        self.manager = JobManager([{"server_url": url, "name": "e", "container_prefix": PREFIX,
                                    "warm_containers": warm}])
        self.sync, self.buffer = JobManagerSync(self.manager), JobManagerBuffer(self.manager)
        self.tasks = {name: Task(image, command=command, protocol="raw", limits=LIMITS)
                      for name, (image, command, _) in PROGRAMS.items()}
        self.warm = warm

    def settle(self, timeout=60.0):
        """Waits (untimed) until every shape used has its warm containers back, as between a
        judge's submissions: a refill must not weigh on the next contender's run."""
        if not self.warm:
            return
        pool = self.manager._dispatcher.warm.pool  # a benchmark may look inside
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = pool.ready["e"]
            shapes = {w.shape for w in ready}
            if ready and all(sum(w.shape == s for w in ready) >= self.warm for s in shapes):
                return
            time.sleep(0.1)

    def one(self, program, i):
        result = self.sync.new_job(self.tasks[program], stdin_of(i), timeout=60,
                                   files=PROGRAMS[program][2])
        assert result["run"]["stdout"] == expected(i), result
        return result["run"].get("warm")

    def judge(self, program):
        ids = self.buffer.new_jobs([(self.tasks[program], stdin_of(i), PROGRAMS[program][2])
                                    for i in range(CASES)])
        assert self.buffer.wait(ids, timeout=300)
        for i, job_id in enumerate(ids):
            result = self.buffer.get_result(job_id)
            assert result["run"]["stdout"] == expected(i), result

    def close(self):
        self.manager.close()


def _epicbox_work_around():
    """epicbox 1.1 builds urllib3's ``Retry(method_whitelist=...)``, an argument urllib3 2
    renamed ``allowed_methods``: its ``Retry`` is given a subclass that takes the old name."""
    import epicbox.utils
    from urllib3.util.retry import Retry

    class _Retry(Retry):
        def __init__(self, *args, method_whitelist=None, **kwargs):
            if method_whitelist is not None:
                kwargs["allowed_methods"] = method_whitelist
            super().__init__(*args, **kwargs)

    epicbox.utils.Retry = _Retry


#: The rlimits a container on Podman must be given (ours gives them, backend/docker/_features.py):
#: without them Podman sets ``nofile`` and ``nproc`` to 1048576, above what its service may
#: raise to, and the start fails ("error setting rlimit type 7", then "type 6").
PODMAN_ULIMITS = [{"Name": "nofile", "Soft": 1024, "Hard": 1024},
                  {"Name": "nproc", "Soft": 32768, "Hard": 32768}]


def _epicbox_on_podman():
    """epicbox gives a container the ``cpu`` and ``fsize`` rlimits only: on Podman it is
    given :data:`PODMAN_ULIMITS` too, as ours and docker-py's containers are."""
    import epicbox.utils
    from docker.types import Ulimit

    create_ulimits = epicbox.utils.create_ulimits

    def with_podmans(limits):
        return (create_ulimits(limits) or []) + [
            Ulimit(name=u["Name"], soft=u["Soft"], hard=u["Hard"]) for u in PODMAN_ULIMITS]

    epicbox.utils.create_ulimits = with_podmans


def is_podman(url):
    import docker

    with docker.APIClient(base_url=url, version="auto") as client:
        return any("podman" in str(c.get("Name", "")).lower()
                   for c in client.version().get("Components") or [])


class Epicbox:
    def __init__(self, url):
        import epicbox

        _epicbox_work_around()
        if is_podman(url):
            _epicbox_on_podman()
        epicbox.configure(profiles=[epicbox.Profile(name, PREFIX + image, user="0")
                                    for name, (image, _, _) in PROGRAMS.items()],
                          docker_url=url)
        self.epicbox = epicbox
        self.lost = 0

    def one(self, program, i):
        _, command, files = PROGRAMS[program]
        result = self.epicbox.run(
            program, " ".join(command),
            files=[{"name": name, "content": content.encode()} for name, content in
                   files.items()],
            stdin=stdin_of(i).encode(), limits={"cputime": LIMITS["time"],
                                                "memory": LIMITS["memory"]})
        if result["stdout"].decode() != expected(i):  # under load it loses a run's output
            self.lost += 1                             # now and then: counted, not fatal

    def judge(self, program):
        for i in range(CASES):
            self.one(program, i)

    def close(self):
        if self.lost:
            print(f"epicbox returned a wrong or empty stdout {self.lost} time(s)")


class RawDockerPy:
    """Hand-written docker-py, done well: the same container definition as ours (limits and
    hardening), no labels."""

    def __init__(self, url):
        import docker

        from engines import api_version
        self.client = docker.APIClient(base_url=url, version=api_version(url))
        self.ulimits = [{"Name": "core", "Soft": 0, "Hard": 0}] + (
            PODMAN_ULIMITS if is_podman(url) else [{"Name": "nofile", "Soft": 1024,
                                                    "Hard": 1024}])

    def one(self, program, i):
        image, command, files = PROGRAMS[program]
        client = self.client
        config = {"Image": PREFIX + image, "Cmd": command, "WorkingDir": "/job",
                  "OpenStdin": True, "StdinOnce": True, "AttachStdin": True,
                  "AttachStdout": True, "AttachStderr": True, "NetworkDisabled": True,
                  "HostConfig": {"Memory": LIMITS["memory"] << 20,
                                 "MemorySwap": LIMITS["memory"] << 20, "PidsLimit": 64,
                                 "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"],
                                 "NetworkMode": "none",
                                 "Ulimits": self.ulimits}}
        container = client.create_container_from_config(config)["Id"]
        try:
            data = io.BytesIO()
            with tarfile.open(fileobj=data, mode="w") as tar:
                for name, content in files.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content.encode()))
            client.put_archive(container, "/job", data.getvalue())
            sock = client.attach_socket(container, params={"stdin": 1, "stdout": 1,
                                                           "stderr": 1, "stream": 1})
            raw = getattr(sock, "_sock", sock)
            client.start(container)
            raw.sendall(stdin_of(i).encode())
            raw.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                chunk = raw.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            sock.close()
            stdout = _demux(b"".join(chunks))
            client.wait(container)
        finally:
            client.remove_container(container, force=True)
        assert stdout.decode() == expected(i), stdout

    def judge(self, program):
        for i in range(CASES):
            self.one(program, i)

    def close(self):
        self.client.close()


def _demux(data):
    out, position = [], 0
    while position + 8 <= len(data):
        kind, size = data[position], struct.unpack(">I", data[position + 4:position + 8])[0]
        if kind == 1:
            out.append(data[position + 8:position + 8 + size])
        position += 8 + size
    return b"".join(out)


# -- measuring -------------------------------------------------------------------------------

def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(fraction * (len(values) - 1))))]


def measure(url, rounds, judge_rounds):
    contenders = {"ours-warm": Ours(url, 2), "ours-cold": Ours(url, 0),
                  "epicbox": Epicbox(url), "docker-py": RawDockerPy(url)}
    one = {(c, p): [] for c in contenders for p in PROGRAMS}
    judge = {(c, p): [] for c in contenders for p in PROGRAMS}
    hits = {p: 0 for p in PROGRAMS}
    try:
        for program in PROGRAMS:  # warm-up: connections, images in the page cache
            for name, contender in list(contenders.items()):
                try:
                    for i in range(2):
                        contender.one(program, i)
                except Exception as error:  # epicbox on an engine it cannot run on
                    if name != "epicbox":
                        raise
                    print(f"epicbox does not run on this engine: {error}"[:300])
                    del contenders[name]
        one = {key: values for key, values in one.items() if key[0] in contenders}
        judge = {key: values for key, values in judge.items() if key[0] in contenders}
        for r in range(rounds):
            for program in PROGRAMS:
                names = list(contenders)
                names = names[r % len(names):] + names[:r % len(names)]  # each goes first
                for name in names:
                    time.sleep(PAUSE)
                    started = time.perf_counter()
                    warm = contenders[name].one(program, r)
                    one[(name, program)].append(time.perf_counter() - started)
                    if name == "ours-warm" and warm:
                        hits[program] += 1
        contenders["ours-warm-20"] = Ours(url, CASES)  # the judge's own configuration
        judge.update({("ours-warm-20", p): [] for p in PROGRAMS})
        for program in PROGRAMS:
            contenders["ours-warm-20"].one(program, 0)
            time.sleep(PAUSE * 3)
            contenders["ours-warm-20"].settle()
        for r in range(judge_rounds):
            for program in PROGRAMS:
                for name in contenders:
                    # the submission's check: one run, as a judge does before its cases (and
                    # what keeps its shape in use, as a judge's stream of submissions does)
                    contenders[name].one(program, 0)
                    time.sleep(PAUSE * 3)  # warm containers come back after a job
                    started = time.perf_counter()
                    contenders[name].judge(program)
                    judge[(name, program)].append(time.perf_counter() - started)
                    if isinstance(contenders[name], Ours):
                        contenders[name].settle()
    finally:
        for contender in contenders.values():
            contender.close()
    return one, judge, hits


def report(kind, one, judge, hits, rounds):
    rows = {"kind": kind, "one": {}, "judge": {}, "warm_hits": hits, "rounds": rounds}
    for title, table, key in (("one submission at a time (latency)", one, "one"),
                              (f"{CASES}-case submission (wall time)", judge, "judge")):
        print(f"\n{kind}: {title}")
        print(f"{'program':8} {'contender':12} {'p50 ms':>8} {'p95 ms':>8} {'vs epicbox':>11}")
        for program in PROGRAMS:
            base = statistics.median(table.get(("epicbox", program)) or
                                     table[("docker-py", program)])  # no epicbox: docker-py
            for (name, prog), values in table.items():
                if prog != program:
                    continue
                p50, p95 = statistics.median(values), percentile(values, 0.95)
                rows[key][f"{program}/{name}"] = {"p50": p50, "p95": p95, "ratio": p50 / base,
                                                  "n": len(values)}
                print(f"{program:8} {name:12} {p50 * 1000:8.1f} {p95 * 1000:8.1f} "
                      f"{p50 / base:10.2f}x")
    print(f"\nserved warm (ours-warm, one at a time): {hits} of {rounds} per program")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="docker20", help="docker20, docker28 or podman")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--judge-rounds", type=int, default=3)
    parser.add_argument("--root", default="/tmp/djm-exec")
    parser.add_argument("--url", help="an engine already running (with both images)")
    args = parser.parse_args(argv)
    engine = None
    url = args.url
    if url is None:
        from engines import build_busybox_image, make_engine
        from images import load_python_image

        name = {"docker20": "e1", "docker28": "d1", "podman": "p1"}[args.kind]
        engine = make_engine(args.kind, name, Path(args.root) / name)  # engines.py stop finds it
        engine.start()
        url = engine.url
        build_busybox_image(url, PREFIX + "busybox")
        load_python_image(url, PREFIX + "python")
    try:
        rows = report(args.kind, *measure(url, args.rounds, args.judge_rounds), args.rounds)
    finally:
        if engine is not None:
            engine.stop()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"exec-{args.kind}.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
