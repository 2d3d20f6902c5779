"""The plumbing of the loops: a Waitset kept from turn to turn, and the Mailbox's wake-ups."""
import multiprocessing
import os
import threading

import pytest

from backend.ipc._messages import Mailbox
from backend.ipc._waitset import Waitset, readable


def test_a_waitset_returns_what_is_ready_and_follows_changes_of_its_set():
    waitset = Waitset()
    one_r, one_w = multiprocessing.Pipe(duplex=False)
    two_r, two_w = os.pipe()
    try:
        assert waitset.wait([one_r, two_r], timeout=0) == set()
        one_w.send("hello")
        assert waitset.wait([one_r, two_r], timeout=5) == {one_r}
        assert one_r.recv() == "hello"
        os.write(two_w, b"x")
        assert waitset.wait([one_r, two_r], timeout=5) == {two_r}
        assert waitset.wait([one_r], timeout=0) == set()  # two_r left the set
        assert waitset.wait([two_r], timeout=0) == {two_r}  # and came back
    finally:
        one_r.close()
        one_w.close()
        for fd in (two_r, two_w):
            os.close(fd)


def test_a_waitset_sees_the_end_of_a_pipe_and_keeps_the_timeout():
    waitset = Waitset()
    read_end, write_end = multiprocessing.Pipe(duplex=False)
    assert waitset.wait([read_end], timeout=0.05) == set()
    write_end.close()
    assert waitset.wait([read_end], timeout=5) == {read_end}
    assert readable(read_end.fileno())
    with pytest.raises(EOFError):
        read_end.recv()
    read_end.close()


def test_a_burst_of_puts_costs_one_wake_up_and_none_is_lost():
    mailbox = Mailbox()
    waitset = Waitset()
    try:
        for i in range(100):
            mailbox.put(i)
        assert os.read(mailbox.fileno(), 100) == b"!"  # one wake-up for the burst
        os.write(mailbox._wake_w, b"!")  # put it back
        assert list(mailbox.drain()) == list(range(100))
        assert waitset.wait([mailbox], timeout=0) == set()
        mailbox.put("again")  # after a drain, a put wakes the owner again
        assert waitset.wait([mailbox], timeout=5) == {mailbox}
        assert list(mailbox.drain()) == ["again"]
    finally:
        mailbox.close()


def test_puts_from_many_threads_all_reach_an_owner_that_waits():
    mailbox, waitset = Mailbox(), Waitset()
    count, producers = 20000, 4
    received = []

    def produce(k):
        for i in range(count):
            mailbox.put((k, i))

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    for thread in threads:
        thread.start()
    try:
        while len(received) < count * producers:
            # a lost wake-up would leave messages in the deque with nothing to wake us
            assert waitset.wait([mailbox], timeout=10) == {mailbox}, len(received)
            received.extend(mailbox.drain())
    finally:
        for thread in threads:
            thread.join()
        mailbox.close()
    assert sorted(received) == sorted((k, i) for k in range(producers) for i in range(count))
