"""A Python playground: snippets with their stdin and files, results as they come.

Each submission is a Python program (``main.py``, and any other file it imports or reads) and
its stdin; its stdout, stderr and exit code come back. Warm starts are on
(``warm_containers: 2``): once the first snippet ran, the next ones are written into
containers that were started in advance, their program waiting behind a gate until its files
are in and its input comes (see docs/performance.rst, "Code execution").

The image is ``backend-test-python``, a Debian 12 root file system with ``python3``:
``python scripts/images.py python --engine URL`` builds and loads it.

    python examples/playground.py unix:///tmp/e1.sock
    (the engine from DOCKER_HOST, else the system's, when no URL is given)
"""
import os
import sys
import time

from backend import JobManager, JobManagerSync, Task

URL = (sys.argv[1:] or [os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")])[0]
SNIPPETS = [
    ("print('hello, world')", "", {}),
    ("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))", "1 2 3 4", {}),
    ("from shapes import area\nprint(area(3))", "", {"shapes.py": "def area(r):\n"
                                                                 "    return 3.14159 * r * r\n"}),
    ("print(open('data.csv').read().count('\\n'), 'rows')", "", {"data.csv": "a,b\n1,2\n3,4\n"}),
    ("raise SystemExit('bad input')", "", {}),
    ("while True: pass", "", {}),  # ends by the time limit
]

task = Task("python", command=["python3", "main.py"], protocol="raw",
            limits={"time": 1, "hard_time": 3, "memory": 64, "output": 64 * 1024})
config = {"server_url": URL, "container_prefix": "backend-test-", "warm_containers": 2}
with JobManager([config]) as manager:
    sync = JobManagerSync(manager)
    for number, (code, stdin, files) in enumerate(SNIPPETS, 1):
        started = time.perf_counter()
        result = sync.new_job(task, stdin, timeout=30, files={"main.py": code, **files})
        took = (time.perf_counter() - started) * 1000
        run = result["run"]
        ended = run["reason"] or f"exit code {run['exit_code']}"
        print(f"[{number}] {result['result']} ({ended}), {took:.0f} ms"
              f"{', served warm' if run.get('warm') else ''}")
        for stream in ("stdout", "stderr"):
            if run.get(stream):
                print(f"    {stream}: {run[stream].strip()[-200:]}")
        time.sleep(0.5)  # a user types the next one
