"""The program a Python-function task runs: `python -m scalable._worker IN OUT [INDEX]`.

Owns: loading the call (and, for a map, the item at INDEX), resolving `Ref`
arguments, running the function in the client's working directory, and
writing the outcome: the value into the attempt's stage (exit 0), or the
exception with its traceback beside it (exit 1, so `retries` apply). Must not
talk to the broker.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any

from . import _payload
from ._payload import Ref


def _resolve(value: Any) -> Any:
    if isinstance(value, Ref):
        return value.load()
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    return value


def _call(inp: str, index: Any) -> tuple:
    body = _payload.read_call(inp)
    if index is None:
        args, kwargs = body["args"], body["kwargs"]
    else:
        i = int(index)
        chunk = _payload.read(f"{inp[: -len('.in')]}.c{i // body['chunk']}.in")
        args, kwargs = (chunk[i % body["chunk"]],), body["kwargs"]
    return body, _resolve(args), _resolve(kwargs)


def _write_error(out_abs: str, exc: BaseException) -> None:
    import traceback  # the failure path only: a task that succeeds never imports it

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    try:
        data = _payload.dumps(("err", exc, summary, tb))
        pickle.loads(data)  # an exception that cannot come back travels as text
    except Exception:
        data = _payload.dumps(("err", None, summary, tb))
    attempt = os.environ.get("SCALABLE_ATTEMPT", "1")
    _payload.write_atomic(f"{out_abs[: -len('.out')]}.err.{attempt}", data)


def main(argv: list) -> int:
    inp, out = os.path.abspath(argv[0]), argv[1]
    index = argv[2] if len(argv) > 2 else None
    workdir = os.getcwd()
    stage = os.environ.get("SCALABLE_STAGE_DIR")
    # Written into the stage, the value is promoted only for the counted
    # attempt: a stale attempt never overwrites the one the client reads.
    out_final = os.path.join(stage if stage else workdir, out)
    try:
        body, args, kwargs = _call(inp, index)
        os.chdir(body["cwd"])
        value = body["fn"](*args, **kwargs)
        try:
            data = pickle.dumps(("ok", value), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - a value plain pickle refuses
            data = _payload.dumps(("ok", value))
    except BaseException as exc:  # noqa: BLE001 - every exception goes back to the caller
        _write_error(os.path.join(workdir, out), exc)
        import traceback

        traceback.print_exc()
        return 1
    os.makedirs(os.path.dirname(out_final) or ".", exist_ok=True)
    _payload.write_atomic(out_final, data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
