"""A job's files (docs/running-programs.rst): the rules of their paths, the tar written into the container
before its start, and the reading of its outputs after its end.

Pure functions over plain data, no I/O and no threads: :func:`check_files` and
:func:`check_paths` run in the caller's thread (:meth:`backend.JobManager.new_job`,
:func:`backend.model._task.snapshot_task`), so that a bad path raises there and no job exists;
:func:`files_tar` runs in a submitter (:func:`backend.docker._client.create_and_start`), and
:class:`OutputsReader` in a waiter (:mod:`backend._job_outputs`), over the tar stream the
engine's ``GET /containers/{id}/archive`` sends.
"""
from __future__ import annotations

import io
import posixpath
import tarfile
from typing import IO, Any, Dict, List, Mapping, Optional, Tuple, Union

#: Bytes a job's files may hold in all.
MAX_FILES_SIZE = 64 * 1024 * 1024
#: The working directory of a job with files and no ``workdir``.
DEFAULT_WORKDIR = "/job"
#: Mode of the files and folders written for a job: the owner (the job's user) may write,
#: and anyone may read and run them (a script or a program given as a file runs as it is).
_FILE_MODE, _FOLDER_MODE = 0o755, 0o755

#: A job's files as they cross a pipe: ``(relative path, content)`` pairs, sorted.
Files = Tuple[Tuple[str, bytes], ...]


def path_problem(path: Any) -> Optional[str]:
    """What is wrong with a relative path of a job's file or output, or None.

    The rule: a ``str`` of ``/``-separated names, relative, without an empty, ``.`` or
    ``..`` name, a backslash or a NUL character.
    """
    if not isinstance(path, str):
        return f"must be a str, not {type(path).__name__}"
    if not path:
        return "is empty"
    if path.startswith("/"):
        return "is absolute (it must be relative to the working directory)"
    if "\\" in path:
        return "holds a backslash (paths use '/')"
    if "\0" in path:
        return "holds a NUL character"
    for name in path.split("/"):
        if name == "":
            return "has an empty component (a doubled or a trailing '/')"
        if name in (".", ".."):
            return f"has a {name!r} component"
    return None


def check_files(files: Any) -> Files:
    """Validates a job's ``files`` (``{relative path: bytes or str}``).

    Returns:
        The files as sorted ``(path, bytes)`` pairs (a ``str`` encoded as UTF-8).

    Raises:
        TypeError: ``files`` is not a dict, or a content is not ``bytes``/``str``.
        ValueError: a bad path (the rule it breaks is named), a path that is both a file
            and a folder, or more than :data:`MAX_FILES_SIZE` bytes in all.
    """
    if files is None:
        return ()
    if not isinstance(files, Mapping):
        raise TypeError(f"files must be a dict of {{relative path: bytes or str}}, not "
                        f"{type(files).__name__}")
    checked: Dict[str, bytes] = {}
    total = 0
    for path, content in files.items():
        problem = path_problem(path)
        if problem is not None:
            if not isinstance(path, str):
                raise TypeError(f"file path {path!r} {problem}")
            raise ValueError(f"file path {path!r} {problem}")
        if isinstance(content, str):
            data = content.encode("utf-8")
        elif isinstance(content, (bytes, bytearray, memoryview)):
            data = bytes(content)
        else:
            raise TypeError(f"file {path!r}: its content must be bytes or str, not "
                            f"{type(content).__name__}")
        total += len(data)
        if total > MAX_FILES_SIZE:
            raise ValueError(f"files hold more than {MAX_FILES_SIZE} bytes (64 MiB) in all")
        checked[path] = data
    for path in checked:
        folder = posixpath.dirname(path)
        while folder:
            if folder in checked:
                raise ValueError(f"file path {folder!r} is also the folder of {path!r}")
            folder = posixpath.dirname(folder)
    return tuple(sorted(checked.items()))


def check_paths(paths: Any) -> Tuple[str, ...]:
    """Validates a task's ``outputs`` (relative paths of files or folders).

    Raises:
        TypeError: not a list or tuple of ``str`` (a lone ``str`` included).
        ValueError: a bad path, with the rule it breaks.
    """
    if paths is None:
        return ()
    if isinstance(paths, (str, bytes)) or not isinstance(paths, (list, tuple)):
        raise TypeError(f"task.outputs must be a list of relative paths, not "
                        f"{type(paths).__name__}")
    for path in paths:
        problem = path_problem(path)
        if problem is not None:
            error = TypeError if not isinstance(path, str) else ValueError
            raise error(f"output path {path!r} {problem}")
    return tuple(dict.fromkeys(paths))


def check_workdir(workdir: Any) -> Optional[str]:
    """Validates a task's ``workdir``: None, or an absolute path without ``..``.

    Raises:
        TypeError: not a ``str``.
        ValueError: not absolute, or with a ``..`` name.
    """
    if workdir is None:
        return None
    if not isinstance(workdir, str):
        raise TypeError(f"task.workdir must be an absolute path (a str), not "
                        f"{type(workdir).__name__}")
    if not workdir.startswith("/"):
        raise ValueError(f"task.workdir {workdir!r} must be an absolute path")
    if ".." in workdir.split("/") or "\0" in workdir:
        raise ValueError(f"task.workdir {workdir!r} has a '..' component or a NUL character")
    return posixpath.normpath(workdir).replace("//", "/")


def owner_ids(user: Optional[str]) -> Optional[Tuple[int, int]]:
    """``(uid, gid)`` of a job's user: ``(0, 0)`` for the image's (None), the numbers of
    ``"uid[:gid]"``, None for a user given by name (unknown here)."""
    if not user:
        return 0, 0
    uid, _, gid = user.partition(":")
    if uid.isdigit() and (not gid or gid.isdigit()):
        return int(uid), int(gid or uid)
    return None


def files_tar(files: Files, user: Optional[str], folder: str = "") -> bytes:
    """The tar of a job's files, owned by its user, every folder named (so that it is the
    user's too); ``folder`` (relative, may be empty) prefixes every name and is itself an
    entry. A user given by name gets files that anyone may write (its ids are unknown)."""
    ids = owner_ids(user)
    uid, gid = ids if ids is not None else (0, 0)
    file_mode, folder_mode = (_FILE_MODE, _FOLDER_MODE) if ids is not None else (0o777, 0o777)
    data = io.BytesIO()
    folders = {folder} if folder else set()
    for path, _ in files:
        parent = posixpath.dirname(path)
        while parent:
            folders.add(posixpath.join(folder, parent) if folder else parent)
            parent = posixpath.dirname(parent)
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(folders):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, folder_mode, uid, gid
            tar.addfile(info)
        for path, content in files:
            info = tarfile.TarInfo(posixpath.join(folder, path) if folder else path)
            info.size, info.mode, info.uid, info.gid = len(content), file_mode, uid, gid
            tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


#: Bytes each entry of an output's archive (a file, a folder) costs against the output limit,
#: besides its name and a file's content (the size of its tar header): the size of a result,
#: and the time the waiter spends reading archives (tarfile takes about 0.1 ms a header, more
#: on a loaded machine), are bounded by the limit whatever the number of files
#: (docs/failures.rst).
ENTRY_COST = 512
#: The most names ``run["files_left_out"]`` gives; ``run["files_left_out_more"]`` counts
#: the others.
MAX_LEFT_OUT = 100


class OutputsReader:
    """Reads outputs from the engine's archives within a budget of bytes: each
    :meth:`read` takes the tar of one output path; :attr:`files` are ``{path: bytes}``,
    :attr:`left_out` the first :data:`MAX_LEFT_OUT` files that did not fit and
    :attr:`more_left_out` how many more did not. Every entry read costs
    :data:`ENTRY_COST` and its name; once the budget cannot pay for an entry, no more is
    read (of this archive or the next ones)."""

    def __init__(self, budget: int):
        self.budget = budget
        self.files: Dict[str, bytes] = {}
        self.left_out: List[str] = []
        self.more_left_out = 0
        self.spent = False  # the budget ran out: the rest was not read

    def read(self, path: str, archive: Union[IO[bytes], io.RawIOBase]) -> None:
        """Reads the tar ``archive`` of the output ``path`` (its first name is the path's
        last one: a file, or a folder and what is below it).

        Raises:
            tarfile.TarError: the archive is not a tar we can read (what :mod:`tarfile`
                raises of another type for such bytes, a ``ValueError`` of a bad pax
                number for one, is raised as a ``tarfile.ReadError``); the files read
                until then are kept.
        """
        try:
            self._read(path, archive)
        except (ValueError, EOFError, OverflowError) as error:
            raise tarfile.ReadError(f"a bad archive: {type(error).__name__}: {error}"
                                    ) from error

    def _read(self, path: str, archive: Union[IO[bytes], io.RawIOBase]) -> None:
        if self.spent:
            return
        parent = posixpath.dirname(path)
        with tarfile.open(fileobj=archive, mode="r|") as tar:
            for member in tar:
                name = _utf8(posixpath.join(parent, member.name) if parent else member.name)
                cost = ENTRY_COST + len(name.encode("utf-8"))
                if cost > self.budget:
                    self.spent = True
                    if member.isfile():
                        self._leave_out(name)
                    return
                self.budget -= cost
                if not member.isfile() or path_problem(name) is not None \
                        or name in self.files:
                    continue
                if member.size > self.budget:
                    self._leave_out(name)
                    continue
                stream = tar.extractfile(member) if member.size else None
                content = stream.read(self.budget) if stream is not None else b""
                self.budget -= len(content)
                self.files[name] = content

    def _leave_out(self, name: str) -> None:
        if len(self.left_out) < MAX_LEFT_OUT:
            self.left_out.append(name)
        else:
            self.more_left_out += 1

    def add_to(self, result: Dict[str, Any]) -> None:
        """Puts the files into a result: ``result["files"]``, ``run["files_left_out"]`` and
        ``run["files_left_out_more"]``."""
        result["files"] = dict(self.files)
        run = result.setdefault("run", {})
        run["files_left_out"] = sorted(self.left_out)
        run["files_left_out_more"] = self.more_left_out


def _utf8(name: str) -> str:
    """A name read from a tar as valid UTF-8: bytes that were not are replaced by U+FFFD
    (tarfile keeps them as surrogates, which no UTF-8 encoder takes)."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:
        return name.encode("utf-8", "replace").decode("utf-8")


def upload(files: Files, workdir: str, user: Optional[str], volume: bool) -> Tuple[str, bytes]:
    """Where and what to write for a job's files: ``(path of the PUT, tar)``. On a volume
    (a read-only root) into the working directory itself; else into ``/``, with the working
    directory as an entry of the tar, so that it is the job's user's too."""
    if volume or workdir == "/":
        return workdir, files_tar(files, user)
    return "/", files_tar(files, user, workdir.lstrip("/"))
