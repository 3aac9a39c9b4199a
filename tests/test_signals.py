"""The stop a signal asks for (daemon/runner.py): a handler runs in the main thread between two of
its steps, so it may find that thread inside ``stop.wait()`` holding the event's lock. Setting the
event there waited for the lock forever: a child of ``ingestd run`` whose parent was killed never
stopped (seen once in CI). Each case runs in a process of its own, as signals are per process."""
import subprocess
import sys
import textwrap

import pytest

CASE = textwrap.dedent("""
    import os, signal, sys, threading
    from ingestd.daemon.runner import Supervisor

    supervisor = Supervisor()
    supervisor.install_signal_handlers()
    how = sys.argv[1]
    # The moment of the race, made certain: the main thread holds the lock of ``stop``, as it
    # does for a few steps of each stop.wait(), when the handler runs.
    with supervisor.stop._cond:
        if how == "signal":
            os.kill(os.getpid(), signal.SIGTERM)
        else:  # the parent-death signal of an ``ingestd run`` child calls this from its handler
            signal.signal(signal.SIGUSR1, lambda signum, frame: supervisor.request_stop_from_signal("parent gone"))
            os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(100_000):  # the handler runs between these steps, the lock held
            pass
    print("stopped" if supervisor.stop.wait(10) else "not stopped", flush=True)
""")


@pytest.mark.parametrize("how", ["signal", "parent-death"])
def test_a_signal_while_the_main_thread_holds_the_stop_lock_still_stops(how):
    try:
        done = subprocess.run([sys.executable, "-c", CASE, how], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the process hung: the signal handler waited for a lock its own thread held")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"


def test_a_second_signal_exits_at_once_with_status_1():
    case = textwrap.dedent("""
        import os, signal, time
        from ingestd.daemon.runner import Supervisor
        supervisor = Supervisor()
        supervisor.install_signal_handlers()
        os.kill(os.getpid(), signal.SIGTERM)
        assert supervisor.stop.wait(10)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        print("still running", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", case], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "still running" not in done.stdout
