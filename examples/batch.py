"""JobManagerBuffer: submit a batch of jobs, then take the results as they complete."""
import os

from backend import JobManager, JobManagerBuffer, Task

URL = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
# the job's input is {"n": N}; the container prints whether N is even
SCRIPT = r"""read line
n=$(echo "$line" | sed 's/.*"n": *\([0-9]*\).*/\1/')
if [ $((n % 2)) -eq 0 ]; then result=success; else result=failed; fi
echo "{\"result\": \"$result\", \"text\": \"$n\"}"
"""

with JobManager([{"server_url": URL}]) as manager:
    buffer = JobManagerBuffer(manager)
    task = Task("backend-test-busybox", command=["sh", "-c", SCRIPT], limits={"time": 5})
    ids = buffer.new_jobs((task, {"n": n}) for n in range(10))
    counts = {}
    for job_id, result in buffer.as_completed(ids, timeout=120):
        counts[result["result"]] = counts.get(result["result"], 0) + 1
        print(f"{result['text']:>2} -> {result['result']}")
print(f"{len(ids)} jobs: {counts}")
