"""The command line (``python -m backend``) and the example scripts, end to end."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def run(args, engine=None, timeout=100):
    """Runs ``python args...`` in the checkout, with ``DOCKER_HOST`` set to ``engine``'s URL."""
    env = dict(os.environ)
    env.pop("DOCKER_HOST", None)
    if engine is not None:
        env["DOCKER_HOST"] = engine.url
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.timeout(300)
def test_demo_shows_every_outcome(engines):
    completed = run(["-m", "backend", "demo"], engines[0], timeout=240)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    table = completed.stdout.split("status", 1)[1]
    for status in ("success", "failed", "timeout", "overflow", "crash"):
        assert f"\n{status} " in table, completed.stdout
    assert "jobs/s" in completed.stdout


def test_unknown_command_is_one_line_on_stderr():
    completed = run(["-m", "backend", "bogus"], timeout=60)
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr
    assert "bogus" in completed.stderr
    assert completed.stdout == ""


def test_run_prints_the_result_and_exits_by_status(engines):
    script = 'read line; echo "{\\"result\\": \\"failed\\", \\"text\\": \\"nope\\"}"'
    completed = run(["-m", "backend", "run", "--image", "backend-test-busybox",
                     "--command", script, "--input", '{"x": 1}'], engines[0])
    assert completed.returncode == 1, completed.stderr
    assert '"result": "failed"' in completed.stdout
    completed = run(["-m", "backend", "run", "--image", "backend-test-busybox",
                     "--command", "while :; do :; done", "--time", "1"], engines[0])
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert '"reason": "cpu_time"' in completed.stdout


def test_run_with_no_engine_is_one_line(tmp_path):
    env_engine = type("Engine", (), {"url": f"unix://{tmp_path}/none.sock"})()
    completed = run(["-m", "backend", "run", "--image", "x", "--engine",
                     env_engine.url], env_engine, timeout=60)
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr


@pytest.mark.parametrize("example, expected", [
    ("callback.py", "hello, three"),
    ("batch.py", "10 jobs: "),
    ("futures_asyncio.py", "5^2 = 25 (success"),
])
def test_example_runs(engines, example, expected):
    completed = run([str(EXAMPLES / example)], engines[0])
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert expected in completed.stdout
    assert "Traceback" not in completed.stderr
