"""JobManager with a callback: run three jobs, print each result as it arrives."""
import os

from backend import JobManager, Task

URL = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
# the container reads one JSON line on stdin, {"input": ..., "limits": ..., "job_id": ...},
# and prints a JSON object on stdout
SCRIPT = r"""read line
word=$(echo "$line" | sed 's/.*"word": *"\([^"]*\)".*/\1/')
echo "{\"result\": \"success\", \"text\": \"hello, $word\"}"
"""


def on_result(job_id, task, result):
    # called in this process, by a callback manager thread, once per job
    print(f"job {job_id[:8]}: {result['result']} - {result['text']}")


with JobManager([{"server_url": URL}]) as manager:
    task = Task("backend-test-busybox", command=["sh", "-c", SCRIPT])
    for word in ("one", "two", "three"):
        manager.new_job(task, {"word": word}, on_result)
    # leaving the block closes the manager: it waits for every job and callback
print("all done")
