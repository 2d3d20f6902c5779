"""The pure parts of raw jobs and files (no Docker): path rules, the tar written, the outputs
read within their budget, a raw result."""
import io
import tarfile

import pytest

from backend._files import OutputsReader, check_files, check_workdir, files_tar, upload
from backend._results import ContainerEnd, cap_pair, ended_result
from backend._task import merge_limits


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
    reader = OutputsReader(10)
    reader.read("res", _archive([("res", None), ("res/a", b"12345"), ("res/b", b"123456"),
                                 ("res/c", b"123")]))
    reader.read("sub/top", _archive([("top", b"xy")]))
    result = {"run": {}}
    reader.add_to(result)
    assert result["files"] == {"res/a": b"12345", "res/c": b"123", "sub/top": b"xy"}
    assert result["run"]["files_left_out"] == ["res/b"]


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
