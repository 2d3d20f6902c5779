"""JobManager.submit() returns a concurrent.futures.Future: await it with asyncio."""
import asyncio
import os

from backend import JobManager, Task

URL = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
# the container prints the square of its input
SCRIPT = r"""read line
x=$(echo "$line" | sed 's/.*"input": *\([0-9]*\).*/\1/')
echo "{\"result\": \"success\", \"text\": \"$((x * x))\", \"square\": $((x * x))}"
"""


async def main(manager):
    task = Task("backend-test-busybox", command=["sh", "-c", SCRIPT])
    futures = [asyncio.wrap_future(manager.submit(task, x)) for x in range(1, 6)]
    results = await asyncio.gather(*futures)
    for x, result in zip(range(1, 6), results):
        # keys the container returns besides result, text and problems are kept
        print(f"{x}^2 = {result.get('square')} ({result['result']}: {result['text']})")


with JobManager([{"server_url": URL}]) as manager:
    asyncio.run(main(manager))
