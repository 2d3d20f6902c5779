"""Raw jobs (docs/running-programs.rst): grade a student's shell program by its output, over
two engines.

The student's program (``solution.sh``) knows nothing of this library: it reads two numbers
per line on its stdin and prints their sums. Each test input goes to a raw job with the
program as a file; the job's stdout is compared with the expected output here. A run of the
student's program that loops, prints too much or exits with an error is told apart by its
result's status and reason.

    python examples/raw.py unix:///tmp/e1.sock unix:///tmp/e2.sock
    (engines from DOCKER_HOST, else the system's, when no URL is given)
"""
import os
import sys

from backend import JobManager, JobManagerBuffer, Task

URLS = sys.argv[1:] or [os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")]
SOLUTION = """while read a b; do echo $((a + b)); done
"""
TESTS = [("1 2\n3 4\n", "3\n7\n"), ("10 -10\n", "0\n"), ("", ""), ("5 5\n" * 1000, "10\n" * 1000)]

task = Task("backend-test-busybox", command=["sh", "solution.sh"], protocol="raw",
            limits={"time": 2, "memory": 32, "output": 64 * 1024})
with JobManager([{"server_url": url} for url in URLS]) as manager:
    buffer = JobManagerBuffer(manager)
    ids = buffer.new_jobs((task, stdin, {"solution.sh": SOLUTION}) for stdin, _ in TESTS)
    passed = 0
    for number, (job_id, (stdin, expected)) in enumerate(zip(ids, TESTS), 1):
        buffer.wait([job_id], timeout=120)
        result = buffer.get_result(job_id)
        run = result["run"]
        if result["result"] != "success":
            verdict = f"{result['result']} ({run['reason'] or 'exit code ' + str(run['exit_code'])})"
        else:
            verdict = "passed" if run["stdout"] == expected else "wrong answer"
        passed += verdict == "passed"
        print(f"test {number}: {verdict} on {run['host']} in {run['duration']:.2f} s")
print(f"{passed}/{len(TESTS)} tests passed")
