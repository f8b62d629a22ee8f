"""Detached server processes: free ports, spawning, liveness and stopping.

Processes are started in a new session with their output in a log file, so
they outlive the command that started them. A process is identified by its
PID *and* its start time, so a recycled PID is never mistaken for ours.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from schemas.addresses import process_started, same_process


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Spawned:
    """A started process: its PID, start time (for identity) and log file.

    ``create_time`` is seconds since boot (:func:`schemas.addresses.process_started`),
    so a wall-clock step does not make a running process look like another.
    """

    pid: int
    create_time: float
    log: Path


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    cwd: Path | None = None,
    user: str | None = None,
    env: dict[str, str] | None = None,
) -> Spawned:
    """Start ``argv`` detached (new session), stdout and stderr appended to ``log``.

    Parameters
    ----------
    argv
        Program and arguments.
    log
        Log file; created if needed.
    cwd
        Working directory.
    user
        Run as this system user (needs root), e.g. PostgreSQL refuses root.
    env
        Extra environment variables.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
            **as_user(user),
            close_fds=True,
        )
    # Popen objects would warn when collected while the child still runs;
    # the child is deliberately left running.
    proc.returncode = 0
    return Spawned(pid=proc.pid, create_time=_create_time(proc.pid), log=log)


def as_user(user: str | None) -> dict[str, Any]:
    """``subprocess`` keyword arguments that run a child as ``user`` with *its* groups.

    ``user=`` alone would keep root's group and supplementary groups.
    """
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _create_time(pid: int) -> float:
    """The start of ``pid`` as recorded in ``Spawned.create_time`` (seconds since boot)."""
    try:
        return process_started(pid)
    except psutil.Error:
        return 0.0


def _process(pid: int, create_time: float | None) -> psutil.Process | None:
    """The live process ``pid`` if it is the one started at ``create_time``."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return None
        if not same_process(pid, create_time):
            return None
        return proc
    except psutil.Error:
        return None


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is an exited child of this process."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def is_alive(pid: int, create_time: float | None = None) -> bool:
    """True when ``pid`` runs and (if given) was started at ``create_time``."""
    return _process(pid, create_time) is not None


def stop(
    pid: int,
    create_time: float | None = None,
    *,
    sig: int = signal.SIGTERM,
    timeout: float = 15.0,
) -> bool:
    """Stop one process: send ``sig``, wait up to ``timeout`` s, then SIGKILL.

    Returns ``True`` if the process had to be killed or stopped, ``False``
    if it was already gone (or the PID now belongs to another process).
    """
    proc = _process(pid, create_time)
    if proc is None:
        return False
    try:
        children = proc.children(recursive=True)
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        return True
    if not _wait_gone(proc, timeout):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
        _wait_gone(proc, 5.0)
    # Whatever the server forked must not outlive it (e.g. PostgreSQL backends).
    for child in children:
        if not _wait_gone(child, 0.5):
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
            _wait_gone(child, 2.0)
    return True


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    """Wait until ``proc`` has exited; a zombie counts as exited (and is reaped if ours).

    Zombies matter here: PID 1 of some containers reaps orphans only every
    few seconds, and a zombie holds no port, file or lock.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                _reap(proc.pid)
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def wait_until(
    check: Callable[[], None],
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 0.05,
) -> None:
    """Call ``check`` until it stops raising, ``alive()`` turns false, or time runs out.

    Raises
    ------
    TimeoutError
        After ``timeout`` seconds, or at once when the process died; the
        message carries the last error from ``check``.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            check()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
        if not alive():
            raise TimeoutError(f"the process exited before answering (last error: {last})")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no answer within {timeout:.0f} s (last error: {last})")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
