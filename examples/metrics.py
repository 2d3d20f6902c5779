"""Prometheus metrics of a JobManager (see docs/operations.rst): serves them on
http://127.0.0.1:PORT/metrics while it runs jobs, then prints what a scrape returned.

Needs the ``metrics`` extra (``pip install docker-job-manager[metrics]``). Run it with
``--port 9100 --seconds 600`` and point Prometheus at it to watch it live.
"""
import argparse
import urllib.request

from prometheus_client import CollectorRegistry, start_http_server

from backend import JobManager, JobManagerSync, Task, metrics

SCRIPT = 'read line; echo "{\\"result\\": \\"success\\", \\"text\\": \\"ok\\"}"'

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--port", type=int, default=0, help="the HTTP port (default: any free one)")
parser.add_argument("--seconds", type=float, default=0,
                    help="keep serving this long after the jobs (default: 0)")
args = parser.parse_args()

# the engine the docker CLI would use: DOCKER_HOST, else the current context, else the socket
with JobManager.from_env() as manager:
    registry = CollectorRegistry()  # (or leave it out: prometheus_client's global registry)
    metrics.register(manager, registry)
    server, thread = start_http_server(args.port, addr="127.0.0.1", registry=registry)
    port = server.server_address[1]
    print(f"serving http://127.0.0.1:{port}/metrics")
    sync = JobManagerSync(manager)
    task = Task("backend-test-busybox", command=["sh", "-c", SCRIPT], limits={"time": 5})
    for n in range(5):
        sync.new_job(task, {"n": n}, timeout=60)
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    for line in scraped.decode().splitlines():
        if line.startswith(("jobmanager_jobs_ended_total", "jobmanager_engine_reachable",
                            "jobmanager_queue_wait_seconds_count")):
            print(line)
    if args.seconds:
        thread.join(args.seconds)
    server.shutdown()
    server.server_close()
