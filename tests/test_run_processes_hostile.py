"""Hostile inputs to the consumer processes of ``ingestd run`` (daemon/children.py): an
``INGESTD_PARENT_LINK`` set by someone other than an ``ingestd run`` parent, and signals sent
by hand to a child."""
import os
import signal
import socket
import subprocess

import pytest

from .conftest import ingestd_cmd

pytestmark = [pytest.mark.integration]


def consume_with_link(config_path, value: str, pass_fds=()) -> subprocess.CompletedProcess:
    env = dict(os.environ, INGESTD_PARENT_LINK=value)
    return subprocess.run(ingestd_cmd("--config", str(config_path), "consume"), env=env, pass_fds=pass_fds,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("value", ["garbage", "0", "1", "2", "0:1", "1:1", "2:1", "987654321:1",
                                   "99999999999999999999999:1", "250:1", "-1:1", f"0:{os.getpid()}",
                                   f"2:{os.getpid()}"])
def test_a_parent_link_set_by_an_outsider_is_refused_clearly(write_config, value):
    """The variable names no link of an ``ingestd run`` parent (garbage, a stdio fd, a closed
    or huge fd): ``consume`` refuses with a clear message and exit 2, never a traceback, never
    a silent exit 0 that consumes nothing."""
    result = consume_with_link(write_config(), value)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr[-2000:]
    assert "INGESTD_PARENT_LINK" in result.stderr


def test_a_parent_link_naming_a_pipe_or_a_stream_socket_is_refused_and_left_open(write_config):
    read_end, write_end = os.pipe()
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for fd in (read_end, theirs.fileno()):
            result = consume_with_link(write_config(), f"{fd}:{os.getpid()}", pass_fds=(fd,))
            assert "Traceback" not in result.stderr
            assert result.returncode == 2, result.stderr[-2000:]
            assert "INGESTD_PARENT_LINK" in result.stderr
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        mine.close()
        theirs.close()



def test_a_stopped_child_makes_the_daemon_not_ready_until_it_resumes(write_config, tmp_path):
    """A child stopped by SIGSTOP (or hung) sends no report: /readyz says so, and is ready again
    once the child resumes."""
    import json

    from .test_e2e import wait_for
    from .test_health import free_port, get
    from .test_run_processes import children_of, start_run, stop_run

    port = free_port()
    proc = start_run(write_config(health_port=port), tmp_path, "--workers", "1")
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60)
        [child] = children_of(proc.pid)
        os.kill(child, signal.SIGSTOP)
        try:
            wait_for(lambda: get(port, "/readyz")[0] == 503, timeout=60)
            problems = json.loads(get(port, "/readyz")[1])["problems"]
            assert any("consumer-1" in p and "silent" in p for p in problems)
        finally:
            os.kill(child, signal.SIGCONT)
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60)
        assert children_of(proc.pid) == [child]
    finally:
        assert stop_run(proc) == 0
