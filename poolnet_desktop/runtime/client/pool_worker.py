"""One shard of a ``poolnet.Pool`` call, run by the member inside the shard's sandbox.

``{python} poolnet_pool_worker.py SHARD``: loads the function (``function.pkl``) and this
shard's calls (``calls/SHARD.pkl``), runs them in order and writes ``result.pkl``: one outcome
per call, ``(True, pickled value)`` or ``(False, pickled exception or None, traceback text,
repr)``.

A call that raises is an outcome, not a failed shard: the caller re-raises it with this
traceback, as ``ProcessPoolExecutor`` does, and the shard's other calls still count. Only a
worker that cannot run at all (killed, out of memory) fails its shard.

The submitter ships this file with every task (its bytes cross the network once per member,
cached by sha256), so the member need not import PoolNet inside the sandbox: the standard
library and ``cloudpickle`` (a PoolNet dependency, next to ``{python}``) are all it uses.
The file names are ``core.pool_calls``'s, repeated here for that reason.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

FUNCTION_FILE = "function.pkl"
RESULT_FILE = "result.pkl"


def run_call(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """``(True, the value pickled)``: pickled on its own, so the caller can refuse one value
    (a type it will not unpickle from a member) and keep the others."""
    try:
        value = function(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
        return failure(exc)
    try:
        return (True, cloudpickle.dumps(value))
    except Exception as exc:  # noqa: BLE001 - a value that does not pickle fails its call
        return failure(exc)


def failure(exc: BaseException) -> tuple[Any, ...]:
    """The outcome of a call that raised: the exception itself where it pickles, and always
    its traceback text and repr (an exception that does not pickle still arrives as text)."""
    text = "".join(traceback.format_exception(exc))
    try:
        pickled: bytes | None = cloudpickle.dumps(exc)
    except Exception:  # noqa: BLE001 - an unpicklable exception arrives as its text
        pickled = None
    return (False, pickled, text, repr(exc))


def main(argv: list[str]) -> int:
    # print() reaches the caller as it happens, not when a pipe buffer fills.
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    shard = int(argv[1])
    with open(f"calls/{shard}.pkl", "rb") as handle:
        calls = cloudpickle.load(handle)
    try:
        with open(FUNCTION_FILE, "rb") as handle:
            function = cloudpickle.load(handle)
    except Exception as exc:  # noqa: BLE001 - e.g. a module the member does not have
        outcomes = [failure(exc)] * len(calls)
    else:
        outcomes = [run_call(function, args, kwargs) for args, kwargs in calls]
    data = cloudpickle.dumps(outcomes)  # bools, bytes and text: every value is pickled already
    with open(RESULT_FILE + ".part", "wb") as handle:
        handle.write(data)
    os.replace(RESULT_FILE + ".part", RESULT_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
