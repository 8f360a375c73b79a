"""What travels between the client and a task through files: the pickled call
and the pickled outcome.

Owns: serialisation (cloudpickle when installed, else pickle), the file
layout of a call (`NAME.in`; a map's items in chunk files `NAME.cK.in`), the
outcome files (`NAME.out` on success, written into the attempt's stage so only
the counted attempt's is promoted; `NAME.err.ATTEMPT` on an exception), and
`Ref`, the placeholder a future argument becomes. Must not run tasks or talk
to the broker.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any, List, Optional, Tuple

# A map's items are written this many to a file: a task reads one chunk, not
# every item of a 10,000-call map, and the client writes few files.
CHUNK = 256


def _cloudpickle() -> Any:
    """cloudpickle when installed and not refused (`SCALABLE_PICKLE=pickle`).
    Imported here, not at module load: a task's interpreter that only reads
    pays nothing for it."""
    if os.environ.get("SCALABLE_PICKLE") == "pickle":
        return None
    try:
        import cloudpickle  # type: ignore[import-not-found]
    except ImportError:
        return None
    return cloudpickle


def dumps(obj: Any) -> bytes:
    """cloudpickle (lambdas and functions of `__main__` travel by value), else pickle."""
    cp = _cloudpickle()
    return (cp or pickle).dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _head() -> bytes:
    """What a task loads before the call: without cloudpickle, functions of
    the caller's script are pickled as `__main__.NAME`, so the task runs the
    script as `__mp_main__` first (multiprocessing's spawn does the same; its
    `if __name__ == "__main__":` block does not run)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) if _cloudpickle() is None else None
    return pickle.dumps({"main": os.path.abspath(path) if path else None})


def fixup_main(path: str) -> None:
    import runpy
    import types

    module = types.ModuleType("__mp_main__")
    module.__dict__.update(runpy.run_path(path, run_name="__mp_main__"))
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module


def read_call(path: str) -> Any:
    """A call written by `write_call` or `write_map`: its head, then its body."""
    with open(path, "rb") as f:
        head = pickle.load(f)
        if head.get("main"):
            fixup_main(head["main"])
        return pickle.load(f)


def write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read(path: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


class Ref:
    """A future passed as an argument: its task's outcome file, read by the
    dependent task when it starts (the dependency has succeeded by then)."""

    def __init__(self, out_path: str) -> None:
        self.out_path = out_path

    def load(self) -> Any:
        kind, value = read(self.out_path)[:2]
        if kind != "ok":  # pragma: no cover - `after` runs dependents only on success
            raise RuntimeError(f"dependency outcome {self.out_path} is not a value")
        return value


def write_call(dirpath: str, name: str, fn: Any, args: tuple, kwargs: dict, cwd: str) -> None:
    body = {"fn": fn, "args": args, "kwargs": kwargs, "cwd": cwd}
    write_atomic(os.path.join(dirpath, f"{name}.in"), _head() + dumps(body))


def write_map(dirpath: str, name: str, fn: Any, items: List[Any], kwargs: dict, cwd: str) -> None:
    head = {"fn": fn, "kwargs": kwargs, "cwd": cwd, "chunk": CHUNK}
    write_atomic(os.path.join(dirpath, f"{name}.in"), _head() + dumps(head))
    for k in range(0, len(items), CHUNK):
        write_atomic(os.path.join(dirpath, f"{name}.c{k // CHUNK}.in"), dumps(items[k : k + CHUNK]))


def out_name(name: str, index: Optional[int]) -> str:
    return f"{name}.out" if index is None else f"{name}-{index}.out"


def latest_error(dirpath: str, out: str) -> Optional[Tuple[Any, str, str]]:
    """The exception of the task's last attempt that raised one: (exception or
    None, its type and message, the remote traceback text)."""
    import glob  # the client's failure path only: a task's interpreter never pays for it

    base = os.path.join(dirpath, out[: -len(".out")] + ".err.")
    found = []
    for path in glob.glob(glob.escape(base) + "*"):
        suffix = path[len(base):]
        if suffix.isdigit():
            found.append((int(suffix), path))
    if not found:
        return None
    _, exc, summary, tb = read(max(found)[1])
    return exc, summary, tb
