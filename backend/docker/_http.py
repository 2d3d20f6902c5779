"""A small HTTP/1.1 client for the Docker Engine API, on the standard library only.

Our child processes call Docker for every job, so the transport's cost counts twice: CPU per
call, and the memory of each process. docker-py over requests costs about 1-2 ms of CPU per
call and some 15 MiB per process; this client, a keep-alive socket per thread and a buffered
reader, costs a fraction of both. It speaks only what the Engine API needs:

- :meth:`Client.call`: a request with an optional JSON body; the whole response body
  (``Content-Length``, chunked, or until the connection closes).
- :meth:`Client.stream`: a long response read as it comes (the event stream).
- :meth:`Client.upgrade`: a hijacked connection (``attach``): raw bytes both ways.

Addresses are ``unix:///path``, ``tcp://host:port``, ``http://``, ``https://`` and
``ssh://[user@]host[:port]`` (through the system's ``ssh``: :mod:`backend.docker._ssh`); TLS uses
:mod:`ssl` with the CA, client certificate and verification given, whatever the environment says.
Errors: :class:`HttpError` for an answer of status 400 or more; :class:`ProtocolError` for
bytes that are not the HTTP (or the JSON) they should be; ``OSError`` (including
``ssl.SSLError`` and ``TimeoutError``) when the engine cannot be reached or stops answering.
What the engine sends is never trusted: every line and header is bounded, a body is read in
pieces of at most :data:`PIECE` bytes whatever its length or chunk sizes say, and the work
is linear in the bytes received (see docs/security.rst).
How an answer is read (its head, its body in pieces, chunked decoding, bounded JSON) is
:mod:`backend.docker._wire`'s. Only :mod:`backend.docker._client` imports this module: it turns these errors into
:class:`~backend.docker._client.DockerFailure` (callers never see a transport error), and it parses
what the streams carry (attach frames). Any thread may call a :class:`Client`.
"""
from __future__ import annotations

import io
import json
import select
import socket
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Set, Tuple, cast
from urllib.parse import quote, urlencode, urlparse

from backend.docker import _ssh
from backend.docker._wire import (MAX_JSON_LINE, PIECE, HttpError, ProtocolError, _Response,
                                  _error_message, loads)

if TYPE_CHECKING:
    import ssl
    import subprocess

class _Connection:
    """One socket to the engine and a buffered reader over it."""

    def __init__(self, sock: socket.socket, ssh: Optional["subprocess.Popen"] = None):
        self.sock = sock
        self.reader = cast(io.BufferedReader, sock.makefile("rb", buffering=65536))
        self.ssh = ssh  # the ssh process at the other end of an ssh:// connection

    def explained(self, error: BaseException) -> BaseException:
        """``error``, or ssh's own error when ssh ended this connection with one."""
        if self.ssh is None or not isinstance(error, OSError) or isinstance(error, TimeoutError):
            return error
        return _ssh.explain(self.ssh, error)

    def is_dropped(self) -> bool:
        """An idle keep-alive connection that is readable has been closed by the engine."""
        try:
            poller = select.poll()  # not select(): no limit on the descriptor's number
            poller.register(self.sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()


class Client:
    """A client of one engine: keep-alive connections reused across calls and threads.

    Args:
        url: the engine's address.
        tls: ``None``, or a dict with ``ca_cert``, ``client_cert``, ``client_key``, ``verify``.
        timeout: seconds a call may wait for the engine (streams wait without limit).
        api_version: the Engine API version put in every path.
    """

    def __init__(self, url: str, tls: Optional[Dict[str, Any]] = None, timeout: float = 30,
                 api_version: str = "1.41"):
        parsed = urlparse(url)
        self.timeout = timeout
        self.api_version = api_version
        self._ssl_context: Optional["ssl.SSLContext"] = None
        self._unix_path: Optional[str] = None
        self._address: Tuple[str, int] = ("", 0)
        self._ssh: Optional[_ssh.Dialer] = None
        if parsed.scheme == "ssh":
            if tls is not None:
                raise ValueError(f"{url!r}: an ssh URL takes no TLS (ssh encrypts)")
            self._ssh = _ssh.Dialer(url)
            self._host_header = "docker"
        elif parsed.scheme == "unix":
            self._unix_path = parsed.path
            self._host_header = "docker"
        elif parsed.scheme in ("tcp", "http", "https"):
            if not parsed.hostname or not parsed.port:
                raise ValueError(f"{url!r}: a tcp URL needs a host and a port")
            self._address = (parsed.hostname, parsed.port)
            self._host_header = f"{parsed.hostname}:{parsed.port}"
            if tls is not None or parsed.scheme == "https":
                self._ssl_context = _ssl_context(tls or {})
        else:
            raise ValueError(f"{url!r}: only unix://, tcp://, http://, https:// and ssh:// are "
                             f"supported")
        self._idle: List[_Connection] = []
        self._calls: Set[_Connection] = set()  # the connections of calls in progress
        self._aborts = 0  # how many times abort() was called
        self._lock = threading.Lock()
        self._closed = False

    @property
    def plain(self) -> bool:
        """Whether our connections are plain sockets (no TLS): a hijacked one can then be
        half-closed and passed to another process."""
        return self._ssl_context is None

    # -- connections -------------------------------------------------------------------
    def _open(self, timeout: Optional[float]) -> _Connection:
        """A new connection. An error it raises is marked ``before_request``: nothing was
        sent, so the engine did nothing."""
        try:
            return self._connect(timeout)
        except OSError as error:
            setattr(error, "before_request", True)  # read by sent_nothing()
            raise

    def _connect(self, timeout: Optional[float]) -> _Connection:
        if self._ssh is not None:
            sock, process = self._ssh.connect(timeout)
            return _Connection(sock, process)
        if self._unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(self._unix_path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection(self._address, timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                try:
                    sock = self._ssl_context.wrap_socket(sock,
                                                         server_hostname=self._address[0])
                except BaseException:
                    sock.close()
                    raise
        return _Connection(sock)

    def _take(self, timeout: Optional[float]) -> Tuple[_Connection, bool]:
        """A connection, and whether it is a reused one."""
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not connection.is_dropped():
                    connection.sock.settimeout(timeout)
                    return connection, True
                connection.close()
        return self._open(timeout), False

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < 8:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Closes the idle connections (streams and attaches close on their own)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        if self._ssh is not None:
            self._ssh.close()

    def abort(self) -> None:
        """Ends the calls in progress, from any thread: their sockets are shut down, so each
        fails at once with an ``OSError`` (the engine stopped answering; see
        :mod:`backend.watch._probe`). The idle connections are closed; the client stays usable."""
        with self._lock:
            calls, idle, self._idle = list(self._calls), self._idle, []
            self._aborts += 1
        for connection in calls:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for connection in idle:
            connection.close()

    def _calling(self, connection: _Connection, calling: bool) -> None:
        with self._lock:
            if calling:
                self._calls.add(connection)
            else:
                self._calls.discard(connection)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------
    def path(self, template: str, *arguments: str) -> str:
        """``/v<api>`` + ``template`` with ``arguments`` quoted into it."""
        return f"/v{self.api_version}" + template.format(*(quote(a, safe="") for a in arguments))

    def _send(self, connection: _Connection, method: str, path: str,
              params: Optional[Dict[str, Any]], body: Any, headers: Optional[Dict[str, str]],
              data: Optional[bytes] = None) -> _Response:
        """Sends a request: ``body`` as JSON, or ``data`` as it is (its ``Content-Type`` in
        ``headers``)."""
        target = path
        if params:
            target += "?" + urlencode({key: (json.dumps(value) if isinstance(value, dict)
                                             else value) for key, value in params.items()})
        payload = b""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}",
                 "User-Agent: docker-job-manager"]
        if body is not None:
            payload = json.dumps(body).encode()
            lines.append("Content-Type: application/json")
        elif data is not None:
            payload = data
        if body is not None or data is not None or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(payload)}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        connection.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        return _Response(connection)

    def call(self, method: str, path: str, params: Optional[Dict[str, Any]] = None,
             body: Any = None, timeout: Optional[float] = None, data: Optional[bytes] = None,
             content_type: Optional[str] = None) -> bytes:
        """Sends one request (``body`` as JSON, or ``data`` as it is, of ``content_type``)
        and returns the whole body.

        Raises:
            HttpError: status 400 or more.
            ProtocolError: the answer is not HTTP.
            OSError: the engine could not be reached or did not answer in time.
        """
        headers = {"Content-Type": content_type} if content_type else None
        aborts = self._aborts
        connection, reused = self._take(timeout or self.timeout)
        self._calling(connection, True)
        try:
            try:
                response = self._send(connection, method, path, params, body, headers, data)
            except (BrokenPipeError, ConnectionResetError):
                if not reused or path.endswith("/containers/create") or self._aborts != aborts:
                    raise  # (a create sent twice could leave a second container)
                # the engine closed the idle connection as we took it, before reading the
                # request: send it again on a new one
                connection.close()
                self._calling(connection, False)
                connection = self._open(timeout or self.timeout)
                self._calling(connection, True)
                response = self._send(connection, method, path, params, body, headers, data)
            answer = response.read_all()
        except BaseException as error:
            connection.close()
            raise connection.explained(error)
        finally:
            self._calling(connection, False)
        if response.keep_alive:
            self._give_back(connection)
        else:
            connection.close()
        if response.status >= 400:
            raise HttpError(response.status, _error_message(answer))
        return answer

    def json(self, method: str, path: str, params: Optional[Dict[str, Any]] = None,
             body: Any = None, timeout: Optional[float] = None) -> Any:
        """:meth:`call`, with the body decoded from JSON (``None`` when empty)."""
        data = self.call(method, path, params, body, timeout)
        return loads(data) if data.strip() else None

    def stream(self, method: str, path: str, params: Optional[Dict[str, Any]] = None,
               headers: Optional[Dict[str, str]] = None, data: Optional[bytes] = None,
               read_timeout: Optional[float] = None) -> "Stream":
        """Starts a long response, with ``data`` as the request's body if given; iterate its
        chunks. Once it answered, each read waits ``read_timeout`` (None: without limit)."""
        connection = self._open(self.timeout)
        try:
            response = self._send(connection, method, path, params, None, headers, data)
            if response.status >= 400:
                raise HttpError(response.status, _error_message(response.read_all()))
        except BaseException as error:
            connection.close()
            raise connection.explained(error)
        connection.sock.settimeout(read_timeout)
        return Stream(connection, response)

    def upgrade(self, path: str, params: Optional[Dict[str, Any]] = None) -> "Stream":
        """Hijacks a connection (``attach``): the returned stream's ``sock`` writes to the
        container, its ``reader`` reads from it."""
        return self.stream("POST", path, params, {"Connection": "Upgrade", "Upgrade": "tcp"})


class Stream:
    """A response read as it comes, or a hijacked connection; :meth:`shutdown` ends it from
    another thread (the reader then sees end of file)."""

    def __init__(self, connection: _Connection, response: Optional[_Response]):
        self.connection = connection
        self.response = response
        self.sock = connection.sock
        self.reader = connection.reader

    def chunks(self) -> Iterator[bytes]:
        if self.response is None:  # an adopted attach: its response was read elsewhere
            raise ValueError("this stream has no response body")
        return self.response.chunks()

    def lines(self) -> Iterator[bytes]:
        """The body's non-blank lines (without their newline), each as soon as it is whole;
        work linear in the bytes received.

        Raises:
            ProtocolError: a line longer than :data:`MAX_JSON_LINE`.
        """
        pending = bytearray()
        for chunk in self.chunks():
            *whole, rest = chunk.split(b"\n")
            for line in whole:
                if pending:
                    pending += line
                    line, pending = bytes(pending), bytearray()
                if len(line) > MAX_JSON_LINE:
                    raise ProtocolError(f"a line longer than {MAX_JSON_LINE} bytes")
                if line.strip():
                    yield line
            pending += rest
            if len(pending) > MAX_JSON_LINE:
                raise ProtocolError(f"a line longer than {MAX_JSON_LINE} bytes")
        if pending.strip():
            yield bytes(pending)

    def json_lines(self) -> Iterator[Any]:
        """The body as newline-separated JSON values (the event stream).

        Raises:
            ProtocolError: a line too long, or not JSON.
        """
        for line in self.lines():
            yield loads(line)

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close_input(self) -> None:
        """End of file for the other side; reading goes on (plain sockets only)."""
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.connection.close()


def adopt(fd: int) -> Stream:
    """A hijacked connection received from another process by its file descriptor (its
    response was read there): ``reader`` reads from it, ``shutdown()`` ends it."""
    sock = socket.socket(fileno=fd)
    sock.settimeout(None)
    return Stream(_Connection(sock), None)


def sent_nothing(error: BaseException) -> bool:
    """Whether ``error`` came before the request was sent (the connection failed): the engine
    did nothing."""
    return bool(getattr(error, "before_request", False))


def _ssl_context(tls: Dict[str, Any]) -> "ssl.SSLContext":
    import ssl  # only engines reached over TLS pay for it

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.get("verify", True):
        if tls.get("ca_cert"):
            context.load_verify_locations(cafile=tls["ca_cert"])
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.get("client_cert"):
        context.load_cert_chain(tls["client_cert"], tls["client_key"])
    return context
