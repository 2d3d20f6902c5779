"""A judge: a submission checked once, then run on 20 test cases, with a verdict per case.

The submission (a Python program) is first compiled on its own (``python3 -m py_compile``): a
syntax error is a compile error and no test runs. Then the 20 test cases go at once through
:class:`~backend.JobManagerBuffer`, each a raw job with the program as a file and the case's
input as stdin, and each verdict is printed as it comes: accepted, wrong answer, time limit,
memory limit, runtime error. Warm starts are on, a warm container per test case
(``warm_containers: 20``): from a judge's second submission on, every case of a submission
starts warm (the first one uses the shape, which is then kept warm). See
docs/performance.rst, "Code execution".

The image is ``backend-test-python`` (``python scripts/images.py python --engine URL``).

    python examples/judge.py unix:///tmp/e1.sock [unix:///tmp/e2.sock]
    (engines from DOCKER_HOST, else the system's, when no URL is given)
"""
import os
import sys

from backend import JobManager, JobManagerBuffer, Task

URLS = sys.argv[1:] or [os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")]
SUBMISSION = """import sys
n = int(sys.stdin.readline())
values = list(map(int, sys.stdin.readline().split()))
if n == 13:
    while True:  # a bug: loops on this case
        pass
print(sum(values) if n != 7 else sum(values) + 1)  # a bug: wrong on this case
"""
CASES = [(f"{n}\n{' '.join(str(i) for i in range(n))}\n", f"{n * (n - 1) // 2}\n")
         for n in range(1, 21)]
LIMITS = {"time": 1, "hard_time": 3, "memory": 64, "output": 64 * 1024}
PYTHON = "python"

compile_task = Task(PYTHON, command=["python3", "-m", "py_compile", "main.py"], protocol="raw",
                    limits=LIMITS)
run_task = Task(PYTHON, command=["python3", "main.py"], protocol="raw", limits=LIMITS)
files = {"main.py": SUBMISSION}
instances = [{"server_url": url, "container_prefix": "backend-test-",
              "warm_containers": len(CASES)} for url in URLS]
with JobManager(instances) as manager:
    buffer = JobManagerBuffer(manager)
    [check] = buffer.new_jobs([(compile_task, None, files)])
    buffer.wait([check], timeout=60)
    checked = buffer.get_result(check)
    if checked["result"] != "success":
        print("compile error:", checked["run"]["stderr"].strip()[-500:])
        sys.exit(1)
    ids = buffer.new_jobs((run_task, stdin, files) for stdin, _ in CASES)
    case_of = {job_id: number for number, job_id in enumerate(ids, 1)}
    verdicts = {}
    for job_id, result in buffer.as_completed(ids, timeout=300):
        number = case_of[job_id]
        run = result["run"]
        if result["result"] == "success":
            verdict = "accepted" if run["stdout"] == CASES[number - 1][1] else "wrong answer"
        elif result["result"] == "failed":
            verdict = f"runtime error (exit code {run['exit_code']})"
        else:
            verdict = {"cpu_time": "time limit", "wall_time": "time limit",
                       "memory": "memory limit", "output": "output limit"}.get(
                           run["reason"], f"{result['result']} ({run['reason']})")
        verdicts[number] = verdict
        print(f"case {number:2}: {verdict} ({run['duration']:.2f} s"
              f"{', warm' if run.get('warm') else ''})")
accepted = sum(v == "accepted" for v in verdicts.values())
print(f"{accepted}/{len(CASES)} cases accepted")
