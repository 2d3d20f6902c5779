"""The pure parts of raw jobs and files (no Docker): path rules, the tar written, the outputs
read within their budget, a raw result."""
import io
import tarfile

import pytest

from backend.model._files import (ENTRY_COST, MAX_LEFT_OUT, OutputsReader, check_files,
                                  check_workdir, files_tar, upload)
from backend.model._results import ContainerEnd, cap_pair, ended_result
from backend.model._task import merge_limits


def test_check_files_sorts_and_encodes():
    assert check_files({"b": "é", "a/x": b"1"}) == (("a/x", b"1"), ("b", "é".encode()))
    assert check_files(None) == ()


def test_workdir_is_normalised():
    assert check_workdir("/srv//work/") == "/srv/work"
    with pytest.raises(ValueError, match="absolute"):
        check_workdir("srv")


def test_the_tar_names_every_folder_owned_by_the_user():
    path, data = upload(check_files({"d/e/f.txt": "x"}), "/job", "1000:2000", volume=False)
    assert path == "/"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: (m.isdir(), m.uid, m.gid, m.mode) for m in tar.getmembers()}
    assert members == {"job": (True, 1000, 2000, 0o755), "job/d": (True, 1000, 2000, 0o755),
                       "job/d/e": (True, 1000, 2000, 0o755),
                       "job/d/e/f.txt": (False, 1000, 2000, 0o755)}
    assert upload((), "/job", None, volume=True)[0] == "/job"
    with tarfile.open(fileobj=io.BytesIO(files_tar((("a", b""),), "nobody"))) as tar:
        assert tar.getmember("a").mode == 0o777  # a user by name: ids unknown


def _archive(entries):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    data.seek(0)
    return data


def test_outputs_within_their_budget():
    # every entry costs ENTRY_COST and its name, a file its content too
    budget = 5 * ENTRY_COST + len("res" "res/a" "res/b" "res/c" "sub/top") + 5 + 3 + 2
    reader = OutputsReader(budget)
    reader.read("res", _archive([("res", None), ("res/a", b"12345"), ("res/b", b"1" * 5000),
                                 ("res/c", b"123")]))
    reader.read("sub/top", _archive([("top", b"xy")]))
    result = {"run": {}}
    reader.add_to(result)
    assert result["files"] == {"res/a": b"12345", "res/c": b"123", "sub/top": b"xy"}
    assert result["run"]["files_left_out"] == ["res/b"]
    assert result["run"]["files_left_out_more"] == 0 and reader.budget == 0


def test_many_files_cost_their_entries_and_the_reading_stops_when_spent():
    class Counted(io.BytesIO):
        def read(self, size=-1):
            data = super().read(size)
            self.taken += len(data)
            return data

    archive = _archive([("out", None)] + [(f"out/{i:05}", b"") for i in range(20000)])
    data = Counted(archive.getvalue())
    data.taken = 0
    reader = OutputsReader(1000 * (ENTRY_COST + 9))  # the folder, then 999 files
    reader.read("out", data)
    reader.read("other", _archive([("other", b"x")]))  # the budget is spent: not read
    result = {"run": {}}
    reader.add_to(result)
    assert len(result["files"]) == 999 and reader.spent
    assert result["run"]["files_left_out"] == ["out/00999"]  # the one that did not fit
    assert data.taken < len(data.getvalue()) // 10  # the rest of the archive was not read


def test_left_out_names_are_capped_and_counted():
    big = b"x" * 100000  # never fits
    reader = OutputsReader(150 * (ENTRY_COST + 10))
    reader.read("o", _archive([(f"o/{i:04}", big) for i in range(150)]))
    result = {"run": {}}
    reader.add_to(result)
    assert result["files"] == {}
    assert len(result["run"]["files_left_out"]) == MAX_LEFT_OUT
    assert result["run"]["files_left_out_more"] == 150 - MAX_LEFT_OUT


def test_a_name_that_is_not_utf8_comes_back_replaced():
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.GNU_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        info = tarfile.TarInfo(b"o/a\xffb".decode("utf-8", "surrogateescape"))
        info.size = 1
        tar.addfile(info, io.BytesIO(b"z"))
    data.seek(0)
    reader = OutputsReader(1000)
    reader.read("o", data)
    assert reader.files == {"o/a\ufffdb": b"z"}
    "".join(reader.files).encode("utf-8")  # no surrogate left


def test_cap_pair_keeps_a_short_stream_whole():
    out, err = cap_pair(b"o" * 100, b"e" * 10, 50)
    assert err == "e" * 10 and out.startswith("o" * 20) and "cut" in out
    assert cap_pair(b"ab", b"cd", 4) == ("ab", "cd")


@pytest.mark.parametrize("exit_code, reason, status, text", [
    (0, None, "success", ""), (2, None, "failed", ""),
    (153, None, "overflow", "The job wrote more than allowed: a file over 134217728 bytes, "
                            "or over 1073741824 bytes in all.")])
def test_raw_result(exit_code, reason, status, text):
    end = ContainerEnd(exit_code, merge_limits({}), protocol="raw")
    result = ended_result(end, b"out \xff", b"err", b"", "e1", "c1", 0.1)
    assert (result["result"], result["text"]) == (status, text)
    assert (result["run"]["stdout"], result["run"]["stderr"]) == ("out \ufffd", "err")
