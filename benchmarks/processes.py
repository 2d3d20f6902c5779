"""Benchmark: where our client's CPU and memory go, process by process.

One JobManager on two private engines (K slots over them, the default submitter pool), a
warm-up of one job per slot, then a burst of N trivial jobs. For each of our processes
(the user's, the forkserver, the resource tracker, every submitter and waiter) it prints the
CPU it spent per job during the burst and its PSS at the end, and for the user's process the
CPU of each of its threads. Clock ticks are 10 ms: use N of 200 or more.

    python benchmarks/processes.py                  # N=200, K=4, engines under --root
    python benchmarks/processes.py --urls URL1 URL2 --warm
    python benchmarks/processes.py --pool 3          # 3 submitters
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "scripts"))

import run as bench  # noqa: E402 - this folder's benchmark: its image, jobs and meters

from backend.ipc._child import proc_stat

TICK = os.sysconf("SC_CLK_TCK")


def _role(pid: int, children: dict) -> str:
    if pid == os.getpid():
        return "user's process"
    if pid in children:
        return children[pid]
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            command = stream.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    for marker, role in (("resource_tracker", "resource tracker"),
                         ("forkserver import main", "forkserver")):
        if marker in command:
            return role
    return command[:40]


def _cpu(pid: int, tid=None) -> int:
    """Clock ticks of CPU of a process (or of its thread ``tid``); 0 once it is gone."""
    fields = proc_stat(pid, tid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def _threads(pid: int) -> dict:
    return {tid: _cpu(pid, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def measure(urls, n, k, warm, pool=None):
    from backend import JobManager, Task

    task = Task(bench.IMAGE, command=["sh", "-c", bench.JOBS["trivial"]], limits=bench.LIMITS)
    manager = JobManager(bench._instances(urls, k, warm), process_pool_size=pool)
    try:
        bench._warm_up(manager, task)
        names = {t.native_id: t.name for t in threading.enumerate()}
        before = {pid: _cpu(pid) for pid in bench._tree(os.getpid())}
        threads_before = _threads(os.getpid())
        done, ended, lock = threading.Event(), [0], threading.Lock()

        def callback(job_id, task, result):
            assert result["result"] == "success", result
            with lock:
                ended[0] += 1
                if ended[0] == n:
                    done.set()

        started = time.perf_counter()
        for i in range(n):
            manager.new_job(task, i, callback)
        if not done.wait(600):
            raise RuntimeError(f"only {ended[0]} of {n} jobs ended")
        elapsed = time.perf_counter() - started
        after = {pid: _cpu(pid) for pid in bench._tree(os.getpid())}
        threads_after = _threads(os.getpid())
        names.update({t.native_id: t.name for t in threading.enumerate()})
        supervisor = manager._dispatcher.supervisor  # which child is which (reading only)
        children = {child.process.pid: "submitter" for child in supervisor.submitters}
        children.update({child.process.pid: f"waiter of {engine}"
                         for engine, waiters in supervisor.waiters.items() for child in waiters})
        total_cpu = total_pss = 0.0
        print(f"{n} jobs, K={k}, warm starts {'on' if warm else 'off'}, "
              f"{len(manager._dispatcher.supervisor.submitters)} submitters: "
              f"{n / elapsed:.2f} jobs/s")
        print(f"{'pid':>7} {'CPU ms/job':>10} {'PSS MiB':>8}  process")
        for pid in sorted(after):
            per_job = (after[pid] - before.get(pid, 0)) / TICK * 1000 / n
            pss = bench._usage([pid])[2] / 2 ** 20
            total_cpu, total_pss = total_cpu + per_job, total_pss + pss
            print(f"{pid:7d} {per_job:10.2f} {pss:8.1f}  {_role(pid, children)}")
        print(f"{'total':>7} {total_cpu:10.2f} {total_pss:8.1f}")
        print("threads of the user's process (CPU ms/job):")
        for tid, ticks in sorted(threads_after.items()):
            per_job = (ticks - threads_before.get(tid, 0)) / TICK * 1000 / n
            if per_job >= 0.05:
                print(f"  {names.get(int(tid), tid):28} {per_job:6.2f}")
    finally:
        manager.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--warm", action="store_true", help="warm_containers: 1")
    parser.add_argument("--pool", type=int, help="process_pool_size (default: the manager's)")
    parser.add_argument("--root", default="/tmp/djm-bench")
    parser.add_argument("--urls", nargs="*", help="engines already running (with the image)")
    args = parser.parse_args(argv)
    engines, urls = [], args.urls
    if not urls:
        from engines import PrivateEngine, build_busybox_image

        engines = [PrivateEngine(name, Path(args.root) / name) for name in ("e1", "e2")]
        for engine in engines:
            engine.start()
            build_busybox_image(engine.url, bench.IMAGE)
        urls = [engine.url for engine in engines]
    try:
        measure(urls, args.n, args.k, args.warm, args.pool)
    finally:
        for engine in engines:
            engine.stop()


if __name__ == "__main__":
    main()
