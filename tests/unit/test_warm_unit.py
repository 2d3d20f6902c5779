"""The warm pool's bookkeeping without Docker (docs/performance.rst, warm starts): shapes,
which jobs can be served warm, how many are wanted, expiry after ``warm_idle``, eviction for
another shape, loss of an engine, and the slots they hold in placement."""
import dataclasses

import pytest

from backend.model._config import parse_instances
from backend.model._job import JobSpec
from backend.dispatch._placement import Placement
from backend.model._task import Task, snapshot_task
from backend.dispatch._shapes import WarmPool, gated, shape_of

A, B, TLS = parse_instances([
    {"server_url": "unix:///a.sock", "name": "a", "warm_containers": 2, "warm_idle": 10,
     "max_concurrent_jobs": 3},
    {"server_url": "unix:///b.sock", "name": "b"},
    {"server_url": "tcp://c:2376", "name": "c", "warm_containers": 2}])
TLS = dataclasses.replace(TLS, tls={"verify": True})  # its files are not read here


def spec(command="one", job_id="j", **options):
    return JobSpec(job_id, snapshot_task(Task("image", command=[command], **options), None),
                   b"{}\n")


def start(pool, engine="a", now=0.0, fd=10):
    container = pool.wanted(engine, now, "m")
    assert container is not None
    assert pool.started(container.warm_id, f"id-{container.warm_id}", fd, now) is container
    return container


def test_shape_is_the_whole_container_definition():
    assert shape_of(spec(job_id="j1")) == shape_of(spec(job_id="j2"))
    assert shape_of(spec("one")) != shape_of(spec("two"))
    assert shape_of(spec(limits={"memory": 50})) != shape_of(spec())
    assert shape_of(spec(env={"A": "1"})) != shape_of(spec())
    assert shape_of(spec(network=True)) != shape_of(spec())
    assert shape_of(spec(read_only=True)) != shape_of(spec())


def test_raw_jobs_and_jobs_with_files_have_gated_shapes_of_their_own():
    plain = spec()
    raw = spec(protocol="raw")
    with_files = JobSpec("j", plain.task, b"", (("a.txt", b"a"),))
    other_files = JobSpec("j2", plain.task, b"x", (("b.txt", b"b"),))
    assert len({shape_of(plain), shape_of(raw), shape_of(with_files)}) == 3
    assert shape_of(with_files) == shape_of(other_files)  # files are not part of the shape
    assert (gated(plain), gated(raw), gated(with_files)) == (False, True, True)
    assert shape_of(None) is None


def test_a_gated_shape_keeps_the_jobs_workdir_and_its_image_may_be_cold_only():
    pool = WarmPool([A])
    with_files = JobSpec("j", spec(protocol="raw").task, b"in", (("a.txt", b"a"),))
    pool.used("a", with_files, 0.0)
    container = pool.wanted("a", 1.0, "m")
    assert container is not None and container.gate
    assert container.spec.task.workdir == "/job" and container.spec.files == ()
    assert container.spec.stdin == b"" and container.shape == shape_of(with_files)
    assert pool.start_failed(container.warm_id) is container
    assert pool.cold_only_image("a", "image") and not pool.cold_only_image("a", "image")
    pool.used("a", with_files, 2.0)  # gated jobs of that image: cold from now on
    assert pool.wanted("a", 2.0, "m") is None
    pool.used("a", spec(), 2.0)  # a JSON job without files runs no gate: still warm
    assert pool.wanted("a", 2.0, "m") is not None


def test_a_shape_is_wanted_once_used_up_to_warm_containers():
    pool = WarmPool([A, B, TLS])
    assert pool.wanted("a", 0.0) is None  # nothing ran yet
    pool.used("a", spec(), 0.0)
    pool.used("b", spec(), 0.0)   # warm starts off there
    assert pool.wanted("b", 0.0) is None
    first, second = pool.wanted("a", 1.0, "m"), pool.wanted("a", 1.0, "m")
    assert first and second and first.warm_id != second.warm_id
    assert first.spec.stdin == b"" and first.spec.job_id == first.warm_id
    assert pool.wanted("a", 1.0) is None  # two starting: enough
    assert pool.count("a") == 2
    pool.started(first.warm_id, "c1", 5, 1.0)
    assert pool.count("a") == 2 and pool.fds() == [5]
    pool.used("a", spec("two"), 2.0)   # another shape: wanted too
    assert pool.wanted("a", 2.0).shape == shape_of(spec("two"))


def test_take_gives_one_container_per_job_of_its_shape():
    pool = WarmPool([A, B, TLS])
    pool.used("a", spec(), 0.0)
    container = start(pool)
    assert pool.take("a", shape_of(spec("two"))) is None
    assert pool.take("a", shape_of(spec())) is container
    assert pool.take("a", shape_of(spec())) is None  # served once, gone
    assert pool.count("a") == 0


def test_idle_ones_expire_and_unused_shapes_are_forgotten():
    pool = WarmPool([A, B, TLS])
    pool.used("a", spec(), 0.0)
    container = start(pool, now=1.0)
    assert pool.next_due() == 11.0
    assert pool.expired(10.9) == []
    assert pool.expired(11.0) == [container] and pool.count("a") == 0
    assert pool.wanted("a", 11.0) is None  # last used at 0, warm_idle 10: forgotten


def test_evict_keeps_the_waiting_jobs_shape():
    pool = WarmPool([A, B, TLS])
    pool.used("a", spec("one"), 0.0)
    one = start(pool, fd=1)
    pool.used("a", spec("two"), 1.0)  # the last used is the one wanted first
    start(pool, now=1.0, fd=2)
    assert pool.evict("a", shape_of(spec("two"))) is one
    assert pool.evict("a", shape_of(spec("two"))) is None


def test_failures_and_deaths_forget_the_shape_until_the_next_job():
    pool = WarmPool([A, B, TLS])
    pool.used("a", spec(), 0.0)
    failing = pool.wanted("a", 0.0)
    assert pool.start_failed(failing.warm_id) is failing
    assert pool.wanted("a", 0.0) is None
    pool.used("a", spec(), 1.0)
    dead = start(pool, now=1.0, fd=7)
    assert pool.by_fd(7) is dead
    pool.discard(dead)
    pool.forget("a", dead.shape)
    assert pool.count("a") == 0 and pool.wanted("a", 1.0) is None


def test_an_engine_lost_drops_its_containers():
    pool = WarmPool([A, B, TLS])
    pool.used("a", spec(), 0.0)
    container = start(pool)
    assert pool.drop("b") == []
    assert pool.drop("a") == [container] and pool.count("a") == 0


@pytest.mark.parametrize("warm", [0, 2])
def test_warm_containers_hold_slots_in_placement(warm):
    pool = WarmPool([A, B, TLS])
    placement = Placement([A, B, TLS], warm_count=pool.count)
    pool.used("a", spec(), 0.0)
    for _ in range(warm):
        start(pool)
    assert placement.load("a") == warm
    assert placement.has_room("a") == (warm < A.max_concurrent_jobs)


def test_config_keys_are_validated():
    with pytest.raises(ValueError, match="warm_containers"):
        parse_instances([{"server_url": "unix:///a", "warm_containers": -1}])
    with pytest.raises(ValueError, match="warm_idle"):
        parse_instances([{"server_url": "unix:///a", "warm_idle": 0}])
    with pytest.raises(ValueError, match="warm_containers"):
        parse_instances([{"server_url": "unix:///a", "warm_containers": 1.5}])
    assert (B.warm_containers, B.warm_idle) == (0, 60.0)


def test_over_tls_a_warm_container_has_no_attach_and_may_be_given_back():
    pool = WarmPool([A, B, TLS])
    pool.used("c", spec(), 0.0)   # over TLS too (the job's submitter attaches)
    first, second = start(pool, "c", fd=None), start(pool, "c", fd=None)
    assert pool.fds() == [] and pool.count("c") == 2
    taken = pool.take("c", shape_of(spec()))
    assert taken is first
    pool.give_back(taken)  # no submitter was idle: first in line again
    assert pool.take("c", shape_of(spec())) is first and pool.ready["c"] == [second]
