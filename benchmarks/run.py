"""Benchmarks: our JobManager against hand-written docker-py and the docker CLI, side by side.

One run, one process tree, the same two private engines, image, command, limits and N for
every contender. Prints a table (jobs/s, p50/p95 latency, ratios against the best raw
docker-py at the same concurrency K, client CPU per job, peak RSS of our processes) and writes
``benchmarks/results/results.json`` (and a PNG plot when matplotlib is installed).

    python benchmarks/run.py            # N=40, K in 1 2 4 8, trivial and 1-second jobs, 2 repeats
    python benchmarks/run.py --quick    # N=20, K in 1 4, trivial jobs, 1 repeat
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "scripts"))

import docker  # noqa: E402

from backend import JobManager, JobManagerSync, Task  # noqa: E402
from engines import PrivateEngine, build_busybox_image  # noqa: E402

IMAGE = "backend-test-busybox"
JOBS = {"trivial": "read line; echo '{\"result\": \"success\"}'",
        "1s": "read line; sleep 1; echo '{\"result\": \"success\"}'"}
LIMITS = {"time": 10, "memory": 100}


# -- measuring our processes ---------------------------------------------------------------

def _tree(root_pid: int):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stream:
                    fields = stream.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = {root_pid}, [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _cpu_and_rss(pids, exclude):
    cpu, rss = 0.0, 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids - exclude:
        try:
            with open(f"/proc/{pid}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            with open(f"/proc/{pid}/status") as stream:
                for line in stream:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return cpu, rss


class Meter:
    """Client CPU (our process and its descendants, engines excluded) and peak RSS."""

    def __init__(self, exclude):
        self.exclude = exclude
        self.peak_rss = 0
        self.cpu_seen = {}
        self.stop = threading.Event()

    def sample(self):
        pids = _tree(os.getpid())
        cpu, rss = _cpu_and_rss(pids, self.exclude)
        self.peak_rss = max(self.peak_rss, rss)
        return cpu

    def __enter__(self):
        self.start_cpu = self.sample()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self):
        while not self.stop.wait(0.1):
            self.last_cpu = self.sample()

    def finish(self):
        """CPU seconds used since the start (call before our children exit)."""
        used = self.sample() - self.start_cpu
        self.stop.set()
        self.thread.join()
        return used

    def __exit__(self, *exc):
        self.stop.set()


# -- contenders ----------------------------------------------------------------------------

def run_ours(engines, script, n, k, exclude, sync=False):
    per_engine = [k // 2 + (1 if i < k % 2 else 0) for i in range(2)]
    instances = [{"server_url": e.url, "name": e.name, "max_concurrent_jobs": c}
                 for e, c in zip(engines, per_engine) if c]
    task = Task(IMAGE, command=["sh", "-c", script], limits=LIMITS)
    latencies, lock, done = [], threading.Lock(), threading.Event()
    with Meter(exclude) as meter:
        manager = JobManager(instances, process_pool_size=4)
        try:
            started = time.perf_counter()
            if sync:
                runner = JobManagerSync(manager)
                for i in range(n):
                    t0 = time.perf_counter()
                    assert runner.new_job(task, i)["result"] == "success"
                    latencies.append(time.perf_counter() - t0)
            else:
                submitted = {}

                def callback(job_id, task, result):
                    assert result["result"] == "success", result
                    with lock:
                        latencies.append(time.perf_counter() - submitted[job_id])
                        if len(latencies) == n:
                            done.set()

                with lock:
                    for i in range(n):
                        submitted[manager.new_job(task, i, callback)] = time.perf_counter()
                done.wait(600)
            elapsed = time.perf_counter() - started
            cpu = meter.finish()
        finally:
            manager.close()
    return elapsed, latencies, cpu, meter.peak_rss


def _raw_job(client, script, i):
    host_config = client.create_host_config(mem_limit="100m", memswap_limit="100m",
                                            init=True)
    container = client.create_container(IMAGE, command=["sh", "-c", script], stdin_open=True,
                                        network_disabled=True, host_config=host_config)
    stdin = client.attach_socket(container, params={"stdin": 1, "stream": 1})
    client.start(container)
    raw = getattr(stdin, "_sock", stdin)
    raw.sendall(json.dumps({"input": i}).encode() + b"\n")
    raw.close()
    stdin.close()
    client.wait(container)
    out = client.logs(container, stdout=True, stderr=False)
    client.remove_container(container, force=True)
    assert json.loads(out)["result"] == "success"


def _in_threads(job, n, k, exclude):
    """Runs ``job(i)`` (which returns its end time) for N jobs in K threads. Latency counts
    from submission, as for the JobManager, whose jobs are all submitted at once."""
    with Meter(exclude) as meter:
        started = time.perf_counter()
        with ThreadPoolExecutor(k) as pool:
            ends = list(pool.map(job, range(n)))
        elapsed = time.perf_counter() - started
        cpu = meter.finish()
    return elapsed, [end - started for end in ends], cpu, meter.peak_rss


def run_raw(engines, script, n, k, exclude):
    local = threading.local()

    def job(i):
        if not hasattr(local, "clients"):
            local.clients = [docker.APIClient(base_url=e.url, version="1.41") for e in engines]
        _raw_job(local.clients[i % 2], script, i)
        return time.perf_counter()

    return _in_threads(job, n, k, exclude)


def run_raw_sequential(engines, script, n, k, exclude):
    """One raw docker-py job at a time; latency of each job alone (to compare with
    JobManagerSync)."""
    clients = [docker.APIClient(base_url=e.url, version="1.41") for e in engines]
    latencies = []
    with Meter(exclude) as meter:
        started = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            _raw_job(clients[i % 2], script, i)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        cpu = meter.finish()
    return elapsed, latencies, cpu, meter.peak_rss


def run_cli(engines, script, n, k, exclude):
    docker_cli = shutil.which("docker")

    def job(i):
        done = subprocess.run([docker_cli, "-H", engines[i % 2].url, "run", "--rm", "-i",
                               "--network", "none", "--init", "--memory", "100m", IMAGE, "sh",
                               "-c", script], input=json.dumps({"input": i}) + "\n",
                              capture_output=True, text=True, timeout=120)
        assert json.loads(done.stdout)["result"] == "success", done.stderr
        return time.perf_counter()

    return _in_threads(job, n, k, exclude)


CONTENDERS = {"ours": run_ours, "ours-sync": None, "raw": run_raw, "raw-seq": run_raw_sequential,
              "cli": run_cli}


def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(fraction * (len(values) - 1))))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", default="/tmp/djm-bench")
    args = parser.parse_args(argv)
    n, ks, kinds, repeats = (20, [1, 4], ["trivial"], 1) if args.quick else \
        (40, [1, 2, 4, 8], ["trivial", "1s"], 2)
    engines = [PrivateEngine(name, Path(args.root) / name) for name in ("e1", "e2")]
    for engine in engines:
        engine.start()
        build_busybox_image(engine.url, IMAGE)
    exclude = set()
    for engine in engines:
        exclude |= _tree(engine.pid)
    rows = []
    try:
        for kind in kinds:
            script = JOBS[kind]
            for k in ks:
                for name in ("raw", "raw-seq", "ours", "ours-sync", "cli"):
                    if name in ("ours-sync", "raw-seq") and k != 1:
                        continue
                    for repeat in range(repeats):
                        if name == "ours-sync":
                            out = run_ours(engines, script, n, 1, exclude, sync=True)
                        else:
                            out = CONTENDERS[name](engines, script, n, k, exclude)
                        elapsed, latencies, cpu, rss = out
                        rows.append({"kind": kind, "k": k, "contender": name,
                                     "repeat": repeat, "n": n,
                                     "jobs_per_s": n / elapsed,
                                     "p50": statistics.median(latencies),
                                     "p95": percentile(latencies, 0.95),
                                     "cpu_ms_per_job": 1000 * cpu / n,
                                     "peak_rss_mib": rss / 2 ** 20})
                        print(f"{kind:8} K={k} {name:9} #{repeat}: "
                              f"{rows[-1]['jobs_per_s']:6.2f} jobs/s", flush=True)
    finally:
        for engine in engines:
            engine.stop()
    report(rows)


def report(rows):
    best = {}
    for row in rows:
        key = (row["kind"], row["k"], row["contender"])
        if key not in best or row["jobs_per_s"] > best[key]["jobs_per_s"]:
            best[key] = row
    print(f"\n{'kind':8} {'K':>2} {'contender':9} {'jobs/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'xput/raw':>8} {'p50/raw':>7} {'CPU ms/job':>10} {'RSS MiB':>8}")
    for (kind, k, name), row in sorted(best.items()):
        raw = best.get((kind, k, "raw"))
        if name == "ours-sync":
            raw = best.get((kind, 1, "raw-seq"))
        ratio = row["jobs_per_s"] / raw["jobs_per_s"] if raw else float("nan")
        p50 = row["p50"] / raw["p50"] if raw else float("nan")
        print(f"{kind:8} {k:>2} {name:9} {row['jobs_per_s']:7.2f} {1000 * row['p50']:7.0f} "
              f"{1000 * row['p95']:7.0f} {ratio:8.2f} {p50:7.2f} {row['cpu_ms_per_job']:10.1f} "
              f"{row['peak_rss_mib']:8.1f}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(matplotlib not installed: no plot)")
        return
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for (kind, name) in sorted({(r["kind"], r["contender"]) for r in rows}):
        points = sorted((k, row) for (kd, k, n), row in best.items() if kd == kind and n == name)
        ks = [k for k, _ in points]
        left.plot(ks, [r["jobs_per_s"] for _, r in points], marker="o", label=f"{name} {kind}")
        right.plot(ks, [1000 * r["p50"] for _, r in points], marker="o", label=f"{name} {kind}")
    left.set(xlabel="K (concurrent jobs)", ylabel="jobs/s", title="Throughput")
    right.set(xlabel="K (concurrent jobs)", ylabel="p50 latency (ms)", title="Latency")
    left.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "plot.png", dpi=100)


if __name__ == "__main__":
    main()
