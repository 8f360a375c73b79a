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

import glob
import os
import pickle
from typing import Any, List, Optional, Tuple

# A map's items are written this many to a file: a task reads one chunk, not
# every item of a 10,000-call map, and the client writes few files.
CHUNK = 256


def dumps(obj: Any) -> bytes:
    """cloudpickle when installed (lambdas and functions of `__main__` travel
    by value), else pickle. Imported here, not at module load: a task's
    interpreter that only reads pays nothing for it."""
    try:
        import cloudpickle  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - exercised where cloudpickle is absent
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


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
    write_atomic(os.path.join(dirpath, f"{name}.in"), dumps(body))


def write_map(dirpath: str, name: str, fn: Any, items: List[Any], kwargs: dict, cwd: str) -> None:
    head = {"fn": fn, "kwargs": kwargs, "cwd": cwd, "chunk": CHUNK}
    write_atomic(os.path.join(dirpath, f"{name}.in"), dumps(head))
    for k in range(0, len(items), CHUNK):
        write_atomic(os.path.join(dirpath, f"{name}.c{k // CHUNK}.in"), dumps(items[k : k + CHUNK]))


def out_name(name: str, index: Optional[int]) -> str:
    return f"{name}.out" if index is None else f"{name}-{index}.out"


def latest_error(dirpath: str, out: str) -> Optional[Tuple[Any, str, str]]:
    """The exception of the task's last attempt that raised one: (exception or
    None, its type and message, the remote traceback text)."""
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
