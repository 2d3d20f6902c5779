"""The ssh transport's pure parts (backend.docker._ssh), without an sshd: the URL, ssh's error
output (bytes from the host: fuzzed) made one line, and a failed connection explained by the
ssh process's last line."""
import subprocess

import pytest
from hypothesis import given, strategies as st

from backend.docker import _ssh
from backend.model import parse_ssh_url


@pytest.mark.parametrize("url, expected", [
    ("ssh://host", ("host", None, None)),
    ("ssh://grader@host:2222", ("host", "grader", 2222)),
    ("ssh://grader@[::1]:22", ("::1", "grader", 22)),
    ("ssh://host/", ("host", None, None)),
])
def test_urls(url, expected):
    assert parse_ssh_url(url) == expected


@pytest.mark.parametrize("url", ["ssh://", "ssh://host/path", "ssh://host?x=1",
                                 "ssh://u:password@host", "ssh://host:99999",
                                 "ssh://-oProxyCommand=touch", "ssh://-l@host", "tcp://host:1"])
def test_bad_urls(url):
    with pytest.raises(ValueError):
        parse_ssh_url(url)


def test_the_destination_never_reads_as_an_option():
    dialer = _ssh.Dialer("ssh://grader@host:2222")
    assert dialer.destination == ["-p", "2222", "-l", "grader", "--", "host"]


@given(st.binary(max_size=4096))
def test_last_line_of_any_bytes_is_one_printable_line(data):
    line = _ssh.last_line(data)
    assert "\n" not in line and "\r" not in line
    assert line == "" or line.isprintable()
    assert len(line) <= 301


def test_last_line_of_a_host_key_warning():
    banner = (b"@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
              b"@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
              b"Host key for [127.0.0.1]:2222 has changed and you have requested strict "
              b"checking.\r\nHost key verification failed.\r\n")
    assert _ssh.last_line(banner) == "Host key verification failed."


@pytest.mark.parametrize("script, expected", [
    ("echo 'ssh: connect to host h port 22: Connection refused' >&2; exit 255",
     "ssh: connect to host h port 22: Connection refused"),
    ("echo 'bash: line 1: docker: command not found' >&2; exit 127",
     "ssh: bash: line 1: docker: command not found"),
])
def test_a_failed_connection_is_explained_by_ssh_s_last_line(script, expected):
    process = subprocess.Popen(["sh", "-c", script], stderr=subprocess.PIPE)
    error = _ssh.explain(process, ConnectionResetError("the engine closed the connection"))
    process.stderr.close()
    assert isinstance(error, ConnectionError) and str(error) == expected


def test_a_clean_exit_keeps_the_error():
    original = ConnectionResetError("closed")
    done = subprocess.Popen(["true"], stderr=subprocess.PIPE)
    assert _ssh.explain(done, original) is original
    done.stderr.close()
