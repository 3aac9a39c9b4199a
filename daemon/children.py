"""The consumer workers of ``ingestd run`` as child processes, and their link to the parent.

``ingestd run`` keeps the watcher and the poller in its own process and starts
each consumer worker as ``ingestd consume --workers 1`` in a process of its
own: each has its own interpreter lock, so that a burst of small files is no
longer loaded by threads that take turns with the watcher (docs/performance.md,
"Small files"). A child is a plain ``consume`` process, the one the systemd
units and the compose stack run, started with the parent's config file and
environment (secrets stay in the environment, never on a command line); only
the parent serves health and metrics and talks to systemd.

Parent and child share a socket pair (``INGESTD_PARENT_LINK`` names the
child's end): the child sends its readiness and liveness every half second;
the parent sends ``stop`` when it is asked to stop. The child stops
gracefully (finishes the event in hand, acks) on that message, and when the
socket reaches its end: the parent is gone. On Linux the child also asks the
kernel for a signal when the parent dies (``PR_SET_PDEATHSIG``), so that a
parent killed by SIGKILL leaves no consumer behind; the last child out removes
the metrics folder such a parent leaves.

Children write their metrics to files in a private folder
(``PROMETHEUS_MULTIPROC_DIR``, prometheus_client's multiprocess mode); the
parent's ``/metrics`` adds them to its own (daemon/metrics.py), counters of
exited children included, so that a restarted child never makes a counter
go back.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .backoff import compute_backoff
from .health import Health

log = logging.getLogger(__name__)

LINK_ENV = "INGESTD_PARENT_LINK"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Variables that belong to the parent alone: systemd's notification socket and
# watchdog (only the main process may say READY), and sockets handed over at start.
PARENT_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
REPORT_EVERY_SECONDS = 0.5
# A child silent this long (stopped by SIGSTOP, hung) makes the daemon not ready until it speaks again.
SILENT_SECONDS = 5.0
# A child that ran this long before it died is restarted at once, its backoff forgotten.
STEADY_SECONDS = 60.0
RESTART_CAP_SECONDS = 60.0
PR_SET_PDEATHSIG = 1
# The signal the kernel sends a child when its parent dies. Not SIGTERM: it comes again each time
# a thread of the dying parent that had adopted the child ends, and a second SIGTERM means "stop
# at once"; this one only asks for the graceful stop, however often it comes.
PARENT_DEATH_SIGNAL = signal.SIGUSR1
# Every child holds a shared lock on this file of the metrics folder while it runs: a child whose
# parent died removes the folder only if it can then lock it alone (it is the last one out).
IN_USE_FILE = "in-use.lock"


@dataclass
class Slot:
    """Consumer process number ``number``: the process now running, and its history."""

    number: int
    process: subprocess.Popen | None = None
    link: socket.socket | None = None
    started: float = 0.0
    ever_connected: bool = False  # some process of this slot has spoken on its link
    last_report: float = 0.0
    silent: bool = False
    failures: int = 0
    restart_at: float | None = None
    pids: list[int] = field(default_factory=list)


class ConsumerProcesses:
    """Starts ``count`` consumer processes, restarts one that dies (with a bounded backoff),
    reports them to ``health`` and stops them: the target of the parent's ``children`` thread.

    A child that cannot start at all (its first process exits before it speaks) stops the
    daemon: ``failed`` says why, and the thread ends, which the supervisor treats as a role
    that died."""

    def __init__(self, config, count: int, health: Health, stop: threading.Event, metrics_dir: Path,
                 child_options: list[str]) -> None:
        self.config = config
        self.health = health
        self.stop = stop
        self.metrics_dir = metrics_dir
        self.child_options = child_options
        self.slots = [Slot(n) for n in range(1, count + 1)]
        self.failed: str | None = None
        self._lock = threading.Lock()
        for slot in self.slots:
            health.set_ready(self.component(slot), "starting")

    @staticmethod
    def component(slot: Slot) -> str:
        return f"consumer-{slot.number} (process)"

    def command(self) -> list[str]:
        path = [] if self.config.path is None else ["--config", str(Path(self.config.path).absolute())]
        return [sys.executable, "-m", "ingestd.daemon", *path, *self.child_options, "consume", "--workers", "1"]

    def environment(self, child_end: int) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if name not in PARENT_ONLY_ENV}
        env[LINK_ENV] = f"{child_end}:{os.getpid()}"
        env[METRICS_ENV] = str(self.metrics_dir)
        return env

    def run(self) -> None:
        try:
            for slot in self.slots:
                self._start(slot)
            while not self.stop.is_set() and self.failed is None:
                for slot in self.slots:
                    self._tend(slot)
                self.stop.wait(0.2)
        finally:
            self.stop_all(self.config.stop_timeout_seconds)
        if self.failed:
            log.critical("a consumer process could not start; stopping", extra={
                "step": "children", "status": "failed", "error": self.failed})

    def _start(self, slot: Slot) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(self.command(), env=self.environment(child_end.fileno()),
                                       pass_fds=(child_end.fileno(),), process_group=0)
        except OSError as exc:
            parent_end.close()
            self.failed = f"consumer-{slot.number}: {self.command()[0]}: {exc.strerror or exc}"
            return
        finally:
            child_end.close()
        parent_end.setblocking(False)
        with self._lock:
            slot.process, slot.link, slot.started = process, parent_end, time.monotonic()
            slot.restart_at = None
            slot.pids.append(process.pid)
        self.health.set_ready(self.component(slot), "starting")
        log.info("consumer process started", extra={"step": "children", "status": "started",
                                                     "worker": f"consumer-{slot.number}", "pid": process.pid})

    def _tend(self, slot: Slot) -> None:
        """Read what the slot's child said, notice its death, restart it when its time comes."""
        if slot.process is None:
            if slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                self._start(slot)
            else:
                self.health.beat(self.component(slot))  # waiting to restart is this loop at work
            return
        self._read_link(slot)
        status = slot.process.poll()
        if status is not None:
            self._on_exit(slot, status)
            return
        since = time.monotonic() - max(slot.last_report, slot.started)
        if since > SILENT_SECONDS and not slot.silent:
            slot.silent = True
            self.health.set_ready(self.component(slot), f"process {slot.process.pid} silent for "
                                                        f"{since:.0f} s (stopped or hung)")
            log.warning("consumer process silent (stopped or hung)", extra={
                "step": "children", "status": "silent", "worker": f"consumer-{slot.number}",
                "pid": slot.process.pid})

    def _read_link(self, slot: Slot) -> None:
        assert slot.link is not None
        while True:
            try:
                data = slot.link.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # the child's end is gone: its exit is noticed by poll()
            if not data:
                return
            try:
                report = json.loads(data)
            except ValueError:
                continue
            slot.ever_connected, slot.last_report, slot.silent = True, time.monotonic(), False
            problems = [str(p) for p in report.get("problems", [])]
            self.health.set_ready(self.component(slot), "; ".join(problems) or None)
            if not report.get("stale"):
                self.health.beat(self.component(slot))

    def _on_exit(self, slot: Slot, status: int) -> None:
        ran = time.monotonic() - slot.started
        pid = slot.process.pid if slot.process else None
        if slot.link is not None:
            slot.link.close()
        with self._lock:
            slot.process, slot.link = None, None
        if not slot.ever_connected:
            self.failed = (f"consumer-{slot.number} exited with status {_status(status)} before it started "
                           "(its log lines above say why)")
            return
        slot.failures = 1 if ran >= STEADY_SECONDS else slot.failures + 1
        delay = compute_backoff(slot.failures - 1, base=1.0, cap=RESTART_CAP_SECONDS)
        slot.restart_at = time.monotonic() + delay
        self.health.set_ready(self.component(slot), f"exited with status {_status(status)}; restarting in "
                                                    f"{delay:.0f} s")
        log.error("consumer process exited; restarting it", extra={
            "step": "children", "status": "restarting", "worker": f"consumer-{slot.number}", "pid": pid,
            "exit_status": _status(status), "ran_s": round(ran, 1), "failures": slot.failures,
            "retry_in_s": round(delay, 2)})

    def stop_all(self, timeout: float) -> None:
        """Ask every child to stop (finish the event in hand, ack, exit); kill those still
        running after ``timeout`` seconds."""
        running = [slot for slot in self.slots if slot.process is not None]
        for slot in running:
            self._ask_to_stop(slot)
        deadline = time.monotonic() + timeout
        for slot in running:
            assert slot.process is not None
            try:
                slot.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("consumer process did not stop in time; killed (the broker redelivers its event)",
                            extra={"step": "stop", "status": "killed", "worker": f"consumer-{slot.number}",
                                   "pid": slot.process.pid})
                slot.process.kill()
                slot.process.wait()
            if slot.link is not None:
                slot.link.close()
            slot.process, slot.link = None, None

    def _ask_to_stop(self, slot: Slot) -> None:
        # A message, not a signal: a signal that also reached the child itself (systemd's
        # KillMode=control-group) would count as a second one, which stops at once.
        assert slot.process is not None
        try:
            if slot.link is None:
                raise OSError("no link")
            slot.link.send(b"stop")
        except OSError:
            slot.process.send_signal(signal.SIGTERM)

    def kill_all(self) -> None:
        """Kill every child now: the parent's second signal."""
        with self._lock:
            for slot in self.slots:
                if slot.process is not None and slot.process.poll() is None:
                    slot.process.kill()

    def pids(self) -> list[int]:
        with self._lock:
            return [slot.process.pid for slot in self.slots if slot.process is not None]


def _status(returncode: int) -> str:
    """An exit status as people read it: a number, or the signal that ended the process."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return str(returncode)


class ParentLink:
    """The child's end of its link to the parent (``INGESTD_PARENT_LINK``)."""

    def __init__(self, fd: int, parent_pid: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.parent_pid = parent_pid
        self._in_use: TextIO | None = None
        os.set_inheritable(fd, False)

    @classmethod
    def from_environment(cls, environ=os.environ) -> ParentLink | None:
        """The link named by ``INGESTD_PARENT_LINK``; None when it is not set. Raises
        ``ValueError`` (saying why) when it names no link an ``ingestd run`` parent makes (a
        variable exported by hand, or left in a shell): a Unix socket of packets, never a
        standard stream. A file descriptor that is not such a link is left open."""
        value = environ.get(LINK_ENV, "")
        if not value:
            return None
        fd, _, pid = value.partition(":")
        problem = f"{LINK_ENV}={value[:40]!r} names no link to an 'ingestd run' parent process ({{}}); " \
                  f"it is set by 'ingestd run' for its consumer processes only: unset it"
        if not (fd.isdigit() and pid.isdigit() and 2 < int(fd) < 2**31):
            raise ValueError(problem.format("not a file descriptor above 2 and a process id"))
        try:
            is_socket = stat.S_ISSOCK(os.fstat(int(fd)).st_mode)
        except OSError as exc:
            raise ValueError(problem.format(f"file descriptor {fd}: {exc.strerror}")) from None
        if not is_socket:
            raise ValueError(problem.format(f"file descriptor {fd} is not a socket"))
        probe = socket.socket(fileno=int(fd))
        kind = (probe.family, probe.type)
        probe.detach()  # not ours to close
        if kind != (socket.AF_UNIX, socket.SOCK_SEQPACKET):
            raise ValueError(problem.format(f"file descriptor {fd} is not a Unix socket of packets"))
        return cls(int(fd), int(pid))

    def die_with_parent(self, on_death: Callable[[str], None]) -> bool:
        """Have ``on_death`` called when the parent dies (Linux: PR_SET_PDEATHSIG); False when it
        has already. ``on_death`` runs in a signal handler, so it must take no lock
        (``Supervisor.request_stop_from_signal``)."""
        signal.signal(PARENT_DEATH_SIGNAL, lambda signum, frame: on_death("the parent process is gone"))
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # not Linux: the link's end still stops this process
        return os.getppid() == self.parent_pid

    def hold_metrics_folder(self, folder: str | None) -> None:
        """Share the metrics folder with the other children while this one runs."""
        import fcntl
        if not folder:
            return
        try:
            self._in_use = open(os.path.join(folder, IN_USE_FILE), "a")  # noqa: SIM115 - held until exit
            fcntl.flock(self._in_use, fcntl.LOCK_SH)
        except OSError:
            self._in_use = None

    def leave_metrics_folder(self, folder: str | None) -> None:
        """At exit: when the parent died without removing the metrics folder, the last child out does."""
        import fcntl
        in_use = self._in_use
        if not folder or in_use is None or os.getppid() == self.parent_pid:
            return
        try:
            fcntl.flock(in_use, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # another child still runs: the folder is its to remove
        shutil.rmtree(folder, ignore_errors=True)

    def serve(self, health: Health, stop: threading.Event, on_stop: Callable[[str], None]) -> None:
        """Report ``health`` every half second until ``stop``; a ``stop`` message or the link's
        end (the parent is gone) calls ``on_stop`` with the reason."""
        self.sock.settimeout(REPORT_EVERY_SECONDS)
        try:
            while not stop.is_set():
                ok, problems = health.ready()
                _, stale = health.alive()
                try:
                    self.sock.send(json.dumps({"problems": [] if ok else problems, "stale": stale}).encode())
                    message = self.sock.recv(64)
                except TimeoutError:
                    continue
                except OSError:
                    message = b""
                if message == b"stop":
                    on_stop("asked by the parent process")
                elif not message:
                    on_stop("the parent process is gone")
                    return
        finally:
            self.sock.close()
