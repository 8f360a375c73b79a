"""The warm interpreter of an agent: `python -m scalable._zygote SOCKET AGENT_PID`.

Owns: importing the worker and its payload dependencies once, listening on
SOCKET for the agent's trampolines (`scalable-agent warm-exec`, see the
agent's `warm` module), and forking one child per task. The child takes the
trampoline's place: its process group, cpu affinity, cgroup, stdio, cwd and
environment; then it runs `scalable._worker.main` and `os._exit`s. The zygote
tells the trampoline `P PID` once the child started (the child says it) and
`X STATUS` (the raw wait status) once it reaped it; a request it cannot serve
gets `E WHY` and the trampoline runs the task cold.

Must not: start threads or import anything beyond the worker's needs (it
forks), run a task itself, or outlive the agent (it exits within a second of
the agent's end).
"""

from __future__ import annotations

import gc
import os
import pickle  # noqa: F401 - imported once here so children do not pay for it
import selectors
import signal
import socket
import struct
import sys
import traceback
from typing import Dict, List, Optional

from . import _payload, _worker

REQUEST_MAX = 1 << 20  # the trampoline's cap (agent/src/warm.rs)
READ_TIMEOUT = 5.0
AGENT_CHECK_EVERY = 1.0


def _preload() -> None:
    """What a task would import before its function: the serialiser."""
    _payload._cloudpickle()
    import traceback as _tb  # noqa: F401 - the failure path's


class Request:
    def __init__(self, body: bytes, fds: List[int]) -> None:
        fields = body.split(b"\0")
        if fields and fields[-1] == b"":
            fields.pop()
        if len(fields) < 3:
            raise ValueError(f"{len(fields)} fields, at least 3 expected")
        self.pid = int(fields[0])
        self.cwd = os.fsdecode(fields[1])
        n = int(fields[2])
        if not 0 <= n <= len(fields) - 3:
            raise ValueError(f"{n} arguments announced, {len(fields) - 3} fields follow")
        self.args = [os.fsdecode(a) for a in fields[3 : 3 + n]]
        self.env: Dict[str, str] = {}
        for kv in fields[3 + n :]:
            k, _, v = kv.partition(b"=")
            self.env[os.fsdecode(k)] = os.fsdecode(v)
        if len(fds) != 3:
            raise ValueError(f"expected 3 file descriptors, got {len(fds)}")
        self.fds = fds


def _read_request(conn: socket.socket) -> Request:
    conn.settimeout(READ_TIMEOUT)
    data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
    try:
        if len(data) < 4:
            raise ValueError("short request")
        (length,) = struct.unpack(">I", data[:4])
        if length > REQUEST_MAX:
            raise ValueError(f"request of {length} bytes is over the cap")
        body = bytearray(data[4:])
        while len(body) < length:
            more = conn.recv(min(65536, length - len(body)))
            if not more:
                raise ValueError("request cut short")
            body += more
        return Request(bytes(body), list(fds))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _join_cgroup(pid: int) -> None:
    """The trampoline's cgroup (v2), when it is not ours: a task's memory
    limit holds for its child too. Refusal is an error (the task then runs
    cold, inside its limit)."""
    def v2_path(p: str) -> Optional[str]:
        with open(p) as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
        return None

    theirs, ours = v2_path(f"/proc/{pid}/cgroup"), v2_path("/proc/self/cgroup")
    if theirs is not None and theirs != ours:
        with open(os.path.join("/sys/fs/cgroup", theirs.lstrip("/"), "cgroup.procs"), "w") as f:
            f.write("0")


def _become_task(req: Request, conn: socket.socket) -> None:
    """In the child: take the trampoline's place, then say it started."""
    os.setpgid(0, os.getpgid(req.pid))
    _join_cgroup(req.pid)
    os.sched_setaffinity(0, os.sched_getaffinity(req.pid))
    for target, fd in enumerate(req.fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(req.cwd)
    os.environ.clear()
    os.environ.update(req.env)
    sys.argv = [_worker.__file__, *req.args]
    sys.path[0] = req.cwd  # as `python -m` run there would have it
    conn.sendall(f"P {os.getpid()}\n".encode())


def _child(req: Request, conn: socket.socket, others: List[socket.socket]) -> int:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for s in others:
        s.close()
    try:
        _become_task(req, conn)
    except BaseException as exc:  # noqa: BLE001 - the task then runs cold
        try:
            conn.sendall(f"E cannot take the task's place: {exc!r}".replace("\n", " ").encode() + b"\n")
        except OSError:
            pass
        return 70
    conn.close()  # the zygote's copy alone now: its death is seen as EOF
    try:
        return int(_worker.main(req.args) or 0)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        return 1


class Zygote:
    def __init__(self, path: str, agent: int) -> None:
        self.path = path
        self.agent = agent
        self.agent_start = _start_time(agent)
        self.children: Dict[int, socket.socket] = {}
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.wake_r, self.wake_w = os.pipe()

    def listen(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")

    def remove_files(self) -> None:
        """The socket and its lock file; the log only when empty."""
        base = os.path.splitext(self.path)[0]
        for path in (self.path, base + ".lock", base + ".log"):
            try:
                if not path.endswith(".log") or os.path.getsize(path) == 0:
                    os.unlink(path)
            except OSError:
                pass

    def serve(self) -> None:
        while _start_time(self.agent) == self.agent_start:
            for key, _ in self.sel.select(AGENT_CHECK_EVERY):
                if key.data == "accept":
                    self._accept()
                else:
                    os.read(self.wake_r, 4096)
            self._reap()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        try:
            req = _read_request(conn)
        except (OSError, ValueError) as exc:
            _tell(conn, f"E bad request: {exc}".replace("\n", " "))
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            others = [self.listener, *self.children.values()]
            os._exit(_flushed(_child(req, conn, others)))
        for fd in req.fds:
            os.close(fd)
        self.children[pid] = conn

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                _tell(conn, f"X {status}")
                conn.close()


def _tell(conn: socket.socket, line: str) -> None:
    try:
        conn.sendall(line.encode() + b"\n")
    except OSError:
        pass  # the trampoline is gone (killed with its task)


def _flushed(code: int) -> int:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    return code


def _start_time(pid: int) -> Optional[str]:
    """The process's start time (`/proc/PID/stat` field 22): None once it is
    gone; another value if its pid was reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()[19].decode()


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m scalable._zygote SOCKET AGENT_PID", file=sys.stderr)
        return 2
    if sys.path and sys.path[0] == os.getcwd():
        sys.path.pop(0)  # `-m` added "/", the zygote's cwd
    sys.path.insert(0, "")
    _preload()
    zygote = Zygote(argv[0], int(argv[1]))
    try:
        os.sched_setaffinity(0, os.sched_getaffinity(zygote.agent))
    except OSError:
        pass
    zygote.listen()
    gc.freeze()  # what is loaded now stays shared with every child
    os.write(1, b"ready\n")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        zygote.serve()
    finally:
        zygote.remove_files()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

