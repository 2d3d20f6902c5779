"""Removals without pipes, processes or a clock: due times, back-off, removals held while an
engine is down, removals by name again, requests that come back from a dead submitter, and
what is left at close."""
import logging

from backend.ipc._messages import Remove, RemoveLeftovers, Sweep
from backend.dispatch._removals import DELETE_TRIES, UNCONFIRMED_REMOVALS, Removals


def make(*engines):
    down = set()
    removals = Removals(engines or ("e1",), lambda engine: engine not in down)
    return removals, down


def take(removals, engine="e1"):
    request = removals.request(engine)
    if request is not None:
        removals.sent(request)
    return request


def test_containers_go_together_and_label_requests_alone():
    removals, _ = make()
    removals.add("e1", "c1")
    removals.sweep("e1")
    removals.add("e1", "c2")
    assert take(removals) == Remove("e1", ("c1", "c2"))
    assert removals.pending("e1") == [Sweep("e1")]
    assert take(removals) == Sweep("e1")
    assert take(removals) is None
    removals.leftovers("e1")
    assert take(removals) == RemoveLeftovers("e1")


def test_a_request_stays_pending_until_sent():
    removals, _ = make()
    removals.add("e1", "c1")
    removals.sweep("e1")
    removals.add("e1", "c2")
    assert removals.request("e1") == Remove("e1", ("c1", "c2"))
    assert removals.pending("e1") == ["c1", Sweep("e1"), "c2"]


def test_failures_are_retried_after_a_growing_back_off_then_given_up(caplog):
    removals, _ = make()
    removals.add("e1", "c1")
    now, delays = 100.0, []
    with caplog.at_level(logging.WARNING, logger="backend"):
        for _ in range(DELETE_TRIES):
            request = take(removals)
            assert request == Remove("e1", ("c1",))
            removals.finished(request, ["c1"], True, now)
            due = removals.next_due()
            if due is None:  # given up
                break
            delays.append(due - now)
            removals.release_due(due - 0.001)
            assert removals.pending("e1") == []  # not yet
            removals.release_due(due)
            assert removals.pending("e1") == ["c1"] and removals.next_due() is None
            now = due
    assert delays == [0.25 * 2 ** attempt for attempt in range(1, DELETE_TRIES)]
    assert removals.left() == [] and removals.pending("e1") == []
    assert "could not remove container c1 on e1" in caplog.text


def test_a_success_resets_the_attempts():
    removals, _ = make()
    removals.add("e1", "c1")
    removals.finished(take(removals), ["c1"], True, 0.0)
    removals.release_due(10.0)
    removals.finished(take(removals), [], True, 10.0)
    removals.add("e1", "c1")
    removals.finished(take(removals), ["c1"], True, 20.0)
    assert removals.next_due() == 20.0 + 0.25 * 2  # a first failure again


def test_removals_are_held_while_the_engine_is_down_and_no_attempt_counts():
    removals, down = make("e1", "e2")
    removals.add("e1", "c1")
    removals.add("e1", "c2")
    request = take(removals)
    down.add("e1")
    removals.finished(request, ["c1", "c2"], False, 0.0)
    assert removals.next_due() is None  # no back-off: it waits for the engine
    assert removals.request("e1") is None and not removals.pending_on_reachable()
    removals.add("e2", "c3")
    assert removals.pending_on_reachable()  # another engine is not held
    down.discard("e1")
    assert take(removals) == Remove("e1", ("c1", "c2"))
    removals.finished(Remove("e1", ("c1", "c2")), ["c1"], True, 0.0)
    assert removals.next_due() == 0.25 * 2  # the first attempt the engine answered


def test_an_unconfirmed_create_is_removed_by_name_again_later():
    removals, _ = make()
    removals.attempt_failed("e1", None, "backend-j1-1", True, 50.0)
    assert removals.pending("e1") == ["backend-j1-1"]
    assert sorted(due for due, _, _ in removals.retries()) == [
        50.0 + delay for delay in UNCONFIRMED_REMOVALS]
    take(removals)
    for delay in UNCONFIRMED_REMOVALS:
        removals.release_due(50.0 + delay)
        assert take(removals) == Remove("e1", ("backend-j1-1",))
    assert removals.next_due() is None


def test_an_attempt_is_removed_by_id_when_known_and_not_at_all_when_never_sent():
    removals, _ = make()
    removals.attempt_failed("e1", "c1", "backend-j1-1", True, 0.0)
    assert removals.pending("e1") == ["c1"] and not removals.retries()
    removals.attempt_failed("e1", None, "backend-j2-1", False, 0.0)
    assert removals.pending("e1") == ["c1"] and not removals.retries()


def test_what_a_dead_submitter_held_is_pending_again():
    removals, _ = make()
    removals.add("e1", "c1")
    removals.sweep("e1")
    first, second = take(removals), take(removals)
    assert removals.pending("e1") == []
    removals.returned(first)
    removals.returned(second)
    assert removals.pending("e1") == ["c1", Sweep("e1")]


def test_what_is_left_at_close():
    removals, down = make("e1", "e2")
    removals.add("e1", "c1")                              # pending
    removals.finished(Remove("e2", ("c2",)), ["c2"], True, 0.0)  # retried after a failure
    removals.attempt_failed("e1", None, "n1", True, 0.0)  # by name again
    removals.sweep("e2")                                   # by label: not a container
    assert sorted(removals.left()) == [("e1", "c1"), ("e1", "n1"), ("e2", "c2")]
    down.add("e1")  # the check for leftovers cannot cover an engine that does not answer
    assert sorted(removals.left()) == [("e1", "c1"), ("e1", "n1")] + [("e1", "n1")] * 3 + [
        ("e2", "c2")]
