"""The command line (``python -m backend``) and the example scripts, end to end."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def run(args, engine=None, timeout=100):
    """Runs ``python args...`` in the checkout, with ``DOCKER_HOST`` set to ``engine``'s URL."""
    env = dict(os.environ)
    env.pop("DOCKER_HOST", None)
    if engine is not None:
        env["DOCKER_HOST"] = engine.url
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def installed_package(tmp_path):
    """The package as ``pip install .`` lays it out (``setup.py build``: its modules and package
    data), built from a copy of the checkout into ``tmp_path``; returns the folder to put on
    ``PYTHONPATH``."""
    source = tmp_path / "source"
    shutil.copytree(REPO / "backend", source / "backend",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.rst", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "setup.py", "-q", "build", "--build-base",
                    str(tmp_path / "build")], cwd=source, check=True, capture_output=True,
                   timeout=120)
    site = tmp_path / "build" / "lib"
    for data in ("py.typed", "cli/demo/busybox/Dockerfile",
                 "cli/demo/containers/grader/Dockerfile", "cli/demo/containers/grader/grade.sh"):
        assert (site / "backend" / data).is_file(), f"{data} is not package data"
    return site


#: The console script's entry (setup.py: jobmanager=backend.cli:main), checking that the
#: package is the installed one.
ENTRY = ("import sys, backend; from backend.cli import main; "
         "assert backend.__file__.startswith(sys.argv[1]), backend.__file__; "
         "sys.exit(main(sys.argv[2:]))")


@pytest.mark.timeout(300)
def test_demo_shows_every_outcome(engines, tmp_path):
    """Installed (not run from the checkout) and in an empty folder, on DOCKER_HOST."""
    site = installed_package(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, DOCKER_HOST=engines[0].url, PYTHONPATH=str(site))
    completed = subprocess.run([sys.executable, "-c", ENTRY, str(site), "demo"], cwd=empty,
                               env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    table = completed.stdout.split("status", 1)[1]
    for status in ("success", "failed", "timeout", "overflow", "crash"):
        assert f"\n{status} " in table, completed.stdout
    assert "jobs/s" in completed.stdout
    assert not list(empty.iterdir())  # nothing written where it runs


def test_demo_without_an_engine_is_one_line(tmp_path):
    completed = run(["-m", "backend", "demo", "--engine", f"unix://{tmp_path}/none.sock"],
                    timeout=60)
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr
    assert "does not answer" in completed.stderr or "do not answer" in completed.stderr
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/none.sock")
    completed = subprocess.run([sys.executable, "-m", "backend", "demo"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=60)
    if completed.returncode != 0:  # unless the system engine answers
        assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr
        assert "DOCKER_HOST" in completed.stderr


def test_demo_submissions_show_every_outcome_kind():
    from backend.cli import _demo

    jobs = _demo.submissions(40)
    assert len(jobs) == 40  # the same every time:
    assert [job.inputdata for job in jobs] == [job.inputdata for job in _demo.submissions(40)]
    labels = [job.label for job in jobs]
    assert labels.count("answer") == 35
    assert {"loops forever", "eats memory", "prints without end", "missing image",
            "broken grader"} < set(labels)
    assert _demo.missing_outcomes(["success", "failed", "crash"]) == ["timeout", "overflow"]
    assert _demo.missing_outcomes(_demo.EXPECTED_OUTCOMES) == []


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
    ("metrics.py", 'jobmanager_jobs_ended_total{manager='),
])
def test_example_runs(engines, example, expected):
    completed = run([str(EXAMPLES / example)], engines[0])
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert expected in completed.stdout
    assert "Traceback" not in completed.stderr


@pytest.mark.timeout(900)  # the first run builds the python image's root file system
def test_the_code_execution_examples_run(engines, python_image):
    """The playground's snippets each end as they should, the later ones served warm; the
    judge catches its two planted bugs."""
    playground = run([str(EXAMPLES / "playground.py")], engines[0], timeout=200)
    assert playground.returncode == 0, playground.stdout + playground.stderr
    out = playground.stdout
    for expected in ("hello, world", "stdout: 10", "stdout: 28.27", "stdout: 3 rows",
                     "bad input", "timeout (cpu_time)", "served warm"):
        assert expected in out, out
    judge = run([str(EXAMPLES / "judge.py")], engines[0], timeout=200)
    assert judge.returncode == 0, judge.stdout + judge.stderr
    out = judge.stdout
    assert "18/20 cases accepted" in out, out
    assert re.search(r"case  7: wrong answer", out) and re.search(r"case 13: time limit", out), out


# -- batch, hosts, build, cleanup (in-process, through backend.cli.main) -------------------

import json  # noqa: E402
import socket  # noqa: E402

import docker  # noqa: E402

from backend import cli

PREFIX = "backend-test-"


def cli_main(args, capsys):
    """Runs ``backend.cli.main(args)``; returns ``(exit code, stdout, stderr)``."""
    code = cli.main(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def engine_flags(engines):
    flags = []
    for engine in engines:
        flags += ["--engine", engine.url]
    return flags + ["--prefix", PREFIX]


def test_batch_writes_results_and_a_summary(engines, tmp_path, capsys):
    ok = ('read line; case "$line" in *\'"n": 1\'*) t=one;; *) t=other;; esac; '
          'echo "{\\"result\\": \\"success\\", \\"text\\": \\"$t\\"}"')
    jobs = [
        {"image": "busybox", "command": ok, "input": {"n": 1}, "id": "first"},
        {"image": "busybox", "command": ["sh", "-c", ok], "input": [2]},
        {"image": "busybox", "command": "while :; do :; done", "limits": {"time": 1},
         "id": "loop"},
        {"image": "busybox", "command": "echo not json", "id": "bad"},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(job) for job in jobs[:2]) + "\n\n"
                      + "\n".join(json.dumps(job) for job in jobs[2:]) + "\n")
    target = tmp_path / "out.jsonl"
    code, out, err = cli_main(["batch", str(source), str(target), *engine_flags(engines)],
                              capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    by_id = {line["id"]: line for line in lines}
    assert set(by_id) == {"first", 2, "loop", "bad"}
    assert by_id["first"]["line"] == 1 and by_id[2]["line"] == 2
    assert by_id["loop"]["line"] == 4 and by_id["bad"]["line"] == 5  # the blank line counts
    assert by_id["first"]["result"]["result"] == "success"
    assert by_id["first"]["result"]["text"] == "one"  # its input reached the job
    assert by_id[2]["result"]["result"] == "success"
    assert by_id["loop"]["result"]["result"] == "timeout"
    assert by_id["loop"]["result"]["run"]["reason"] == "cpu_time"
    assert by_id["bad"]["result"]["result"] == "crash"
    assert "4/4" in err  # the progress bar
    table = out.split("status", 1)[1]
    assert "\nsuccess " in table and "\ntimeout " in table and "\ncrash " in table
    assert "cpu_time" in table and "bad_output" in table
    assert any(engine.url in table for engine in engines)
    assert "By status: success 2, timeout 1, crash 1" in out
    assert "4 jobs in " in out and "jobs/s" in out


def test_batch_with_a_config_file(engines, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"docker_instances": [
        {"server_url": engines[1].url, "name": "second", "container_prefix": PREFIX,
         "time_between_polls": 0.2}]}))
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"image": "busybox", "command":
                                  'read line; echo \'{"result": "failed", "text": "no"}\''})
                      + "\n")
    target = tmp_path / "out.jsonl"
    code, out, err = cli_main(["batch", str(source), str(target), "--config", str(config)],
                              capsys)
    assert code == 0, err
    (line,) = [json.loads(text) for text in target.read_text().splitlines()]
    assert line["id"] == 1 and line["result"]["result"] == "failed"
    assert line["result"]["run"]["host"] == "second"
    assert "\nfailed " in out and "second" in out


@pytest.mark.parametrize("content, expected", [
    ('{"image": "busybox"}\n{"image": "busybox", oops}\n', "line 2: not JSON"),
    ('[1, 2]\n', "line 1: a job must be a JSON object"),
    ('{"command": "true"}\n', "line 1: 'image'"),
    ('{"image": "busybox", "limits": {"time": -1}}\n', "line 1: limit 'time'"),
    ('{"image": "busybox", "colour": 1}\n', "line 1: unknown key(s) colour"),
])
def test_batch_bad_input_is_one_line(tmp_path, capsys, content, expected):
    source = tmp_path / "in.jsonl"
    source.write_text(content)
    code, out, err = cli_main(["batch", str(source), str(tmp_path / "out.jsonl"),
                               "--engine", f"unix://{tmp_path}/none.sock"], capsys)
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err
    assert not (tmp_path / "out.jsonl").exists()


def test_errors_are_one_line(tmp_path, capsys):
    missing = str(tmp_path / "missing.jsonl")
    code, _, err = cli_main(["batch", missing, str(tmp_path / "out.jsonl")], capsys)
    assert code != 0 and err.strip() == f"error: input file {missing} not found"
    code, _, err = cli_main(["hosts", "--config", str(tmp_path / "none.json")], capsys)
    assert code != 0 and "none.json not found" in err and len(err.splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = cli_main(["hosts", "--config", str(bad)], capsys)
    assert code != 0 and "not JSON" in err and len(err.splitlines()) == 1
    bad.write_text(json.dumps({"docker_instances": [{"server_url": "unix:///x.sock",
                                                     "colour": "red"}]}))
    code, _, err = cli_main(["cleanup", "--config", str(bad)], capsys)
    assert code != 0 and "unknown key 'colour'" in err and len(err.splitlines()) == 1
    bad.write_text(json.dumps({"engines": []}))
    code, _, err = cli_main(["hosts", "--config", str(bad)], capsys)
    assert code != 0 and "unknown configuration key(s) 'engines'" in err
    code, _, err = cli_main(["hosts", "--engine", "ftp://somewhere"], capsys)
    assert code != 0 and "server_url" in err and len(err.splitlines()) == 1
    code, _, err = cli_main(["build", "--engine", "unix:///x.sock"], capsys)
    assert code != 0 and "--containers-directory" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["hosts", "--max-jobs", "many"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--max-jobs" in err


def hosts_rows(out):
    """``{engine: {column: cell}}`` of the table ``hosts`` prints (its header's columns are
    separated by two spaces)."""
    lines = out.splitlines()
    columns = [cell.strip() for cell in lines[0].split("  ") if cell.strip()]
    rows = {}
    for line in lines[2:]:
        if line.strip() and not line.startswith("unreachable"):
            cells = re.split(r"\s{2,}", line.strip())  # a cell may hold one space
            rows[cells[0]] = dict(zip(columns, cells))
    return rows


def test_hosts_shows_reachable_and_unreachable_engines(engines, tmp_path, capsys):
    bogus = f"unix://{tmp_path}/bogus.sock"
    code, out, err = cli_main(["hosts", *engine_flags(engines), "--engine", bogus,
                               "--max-jobs", "7"], capsys)
    assert code == 1, out + err  # an engine is unreachable
    rows = hosts_rows(out)
    for engine in engines:
        row = rows[engine.url]
        assert row["reachable"] == "yes", out
        assert row["kind"] == "Docker", out
        assert row["version"][0].isdigit(), out  # the Docker version
        assert row["api"].startswith("1."), out
        assert [row["running jobs"], row["by manager"], row["capacity"]] == ["0", "-", "7"], out
        assert row["from"] == "--engine", out
    assert rows[bogus]["reachable"] == "no", out
    assert f"unreachable: {bogus}: " in out
    code, out, err = cli_main(["hosts", "--engine", engines[0].url], capsys)
    assert code == 0, err
    assert "100" in out.splitlines()[2]  # the default capacity


def test_build_reports_each_image_and_engine(engines, tmp_path, capsys):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    (good / "Dockerfile").write_text("FROM backend-test-busybox\nRUN echo built > /built\n")
    (bad / "Dockerfile").write_text("FROM backend-test-busybox\nRUN exit 3\n")
    prefix = "djm-cli-build-"
    code, out, err = cli_main(["build", "--containers-directory", str(tmp_path),
                               "--engine", engines[0].url, "--engine", engines[1].url,
                               "--prefix", prefix], capsys)
    assert code == 1, out + err
    lines = out.splitlines()
    for engine in engines:
        assert any(line.startswith(f"{prefix}good") and engine.url in line
                   and line.rstrip().endswith("ok") for line in lines), out
        assert any(line.startswith(f"{prefix}bad") and engine.url in line
                   and "error: " in line for line in lines), out
    assert "2 built, 2 failed" in out
    for engine in engines:
        with docker.APIClient(base_url=engine.url, version="1.41") as client:
            client.inspect_image(f"{prefix}good")
            client.remove_image(f"{prefix}good", force=True)


def test_cleanup_removes_containers_of_dead_managers(engines, capsys):
    labels = {"backend.manager": "cli-test"}
    with docker.APIClient(base_url=engines[0].url, version="1.41") as client:
        dead = client.create_container(
            PREFIX + "busybox", command=["sleep", "60"],
            labels={**labels, "backend.owner": f"{socket.gethostname()}:999999"})["Id"]
        alive = client.create_container(
            PREFIX + "busybox", command=["sleep", "60"],
            labels={**labels, "backend.owner": f"{socket.gethostname()}:{os.getpid()}"})["Id"]
        for container in (dead, alive):
            client.start(container)
        try:
            code, out, err = cli_main(["cleanup", "--engine", engines[0].url,
                                       "--engine", engines[1].url], capsys)
            assert code == 0, err
            assert f"{engines[0].url}: removed 1 container(s)" in out
            assert f"{engines[1].url}: removed 0 container(s)" in out
            left = [c["Id"] for c in client.containers(all=True,
                                                       filters={"label": "backend.manager"})]
            assert dead not in left and alive in left
            code, out, err = cli_main(["cleanup", "--all", "--engine", engines[0].url],
                                      capsys)
            assert code == 0, err
            assert f"{engines[0].url}: removed 1 container(s)" in out
            assert not client.containers(all=True, filters={"label": "backend.manager"})
        finally:
            for container in (dead, alive):
                try:
                    client.remove_container(container, force=True)
                except docker.errors.NotFound:
                    pass


def test_console_script_and_module(engines):
    script = Path(sys.executable).with_name("jobmanager")
    assert script.exists(), "pip install -e . declares the jobmanager console script"
    env = dict(os.environ, DOCKER_HOST=engines[0].url)
    completed = subprocess.run([str(script), "hosts"], env=env, capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert engines[0].url in completed.stdout and "yes" in completed.stdout
    assert hosts_rows(completed.stdout)[engines[0].url]["from"] == "DOCKER_HOST"
    completed = run(["-m", "backend", "--help"], timeout=60)
    assert completed.returncode == 0
    for command in ("demo", "run", "batch", "hosts", "build", "cleanup"):
        assert command in completed.stdout


def test_hosts_takes_the_current_docker_context(engines, tmp_path, monkeypatch, capsys):
    """No --engine and no DOCKER_HOST: the docker CLI's current context, named in "from"."""
    import hashlib
    name = "graders"
    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps(
        {"Name": name, "Endpoints": {"docker": {"Host": engines[0].url,
                                                "SkipTLSVerify": False}}}))
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": name}))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    code, out, err = cli_main(["hosts"], capsys)
    assert code == 0, out + err
    row = hosts_rows(out)[engines[0].url]
    assert row["from"] == f"context {name}" and row["reachable"] == "yes", out
    monkeypatch.setenv("DOCKER_CONTEXT", "missing")
    code, out, err = cli_main(["hosts"], capsys)
    assert code != 0 and "docker context 'missing' not found" in err
    assert len(err.strip().splitlines()) == 1
