"""Many independent items shared out between this process and a forked child per other core: a
tree's module files read, a tree's modules judged. A standard tool being single-threaded is its
limit, not ours.

The items are cut in runs whose numbers go down a pipe; each process takes the next run when it
is done with one (on a loaded machine a slower process takes fewer), and a child sends back all it
made, pickled whole through a pipe, once its runs are done. A forked child shares the parent's
memory as it was: a mapping may read what the parent built (a tree's modules, a kernel) without
pickling it. (A multiprocessing pool costs its parent a third more CPU: its threads, a pickle per
task; and it pickles what it is given.)"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from kabigate.errors import InputError

A = TypeVar("A")
T = TypeVar("T")

# Items a process maps at a time: ~60 runs of a tree's 4,000 files, few enough to cost nothing to
# hand out, enough for a process slowed by other work to take fewer. At most MOST_RUNS runs, so
# that their numbers fit in a page, what any pipe holds (one written whole before anyone reads).
MAPPED_RUN = 64
MOST_RUNS = 2048
# Below this many items a second process costs more than it saves (fork, pipes: ~20 ms).
PARALLEL_MIN_ITEMS = 64


def map_in_processes(items: Sequence[A], each: Callable[[A], T],
                     advance: Callable[..., None] = lambda *_: None) -> list[T]:
    """[each(item) for item in items], computed by this process and a forked child per other core
    when there are enough items and the process may fork (processes_worth_it()); the first
    InputError in the items' order is raised (every run before it was mapped). `each` runs in the
    children on the parent's memory as it was: what it returns must pickle."""
    if not processes_worth_it(len(items)):
        results = []
        for item in items:
            results.append(each(item))
            advance()
        return results
    size = max(MAPPED_RUN, -(-len(items) // MOST_RUNS))
    runs = [items[start:start + size] for start in range(0, len(items), size)]
    queue, queued = os.pipe()
    os.write(queued, b"".join(number.to_bytes(2, "little") for number in range(len(runs))))
    os.close(queued)
    children: list[tuple[int, int]] = []
    try:
        for _ in range(_workers() - 1):
            children.append(_forked(queue, runs, each))
        done, failed = _mapped_runs(queue, runs, each, advance)
        os.close(queue)
        queue = -1
        for pid, reader in list(children):
            with os.fdopen(reader, "rb") as pipe:
                child_done, child_failed = pickle.load(pipe)
            os.waitpid(pid, 0)
            children.remove((pid, reader))
            done.update(child_done)
            failed.update(child_failed)
            for results in child_done.values():
                for _ in results:
                    advance()
        if failed:
            kind, message = failed[min(failed)]  # the first in order: every run before it was mapped
            if kind == "error":
                raise InputError(message)
            raise RuntimeError(f"a mapping process failed: {message}")
        return [result for number in range(len(runs)) for result in done[number]]
    finally:
        if queue >= 0:
            os.close(queue)
        for pid, reader in children:  # an error stops them all
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            with contextlib.suppress(OSError):
                os.close(reader)


def processes_worth_it(count: int) -> bool:
    """Whether mapping `count` items is worth one process per core, and this process may have them."""
    return count >= PARALLEL_MIN_ITEMS and _workers() >= 2 and _forkable()


def _mapped_runs(queue: int, runs: list[Sequence[A]], each: Callable[[A], T],
                 advance: Callable[..., None] = lambda *_: None) -> tuple[dict, dict]:
    """Runs taken from `queue` until it is empty, or a run fails: ({run number: [each(item)...]},
    {run number: ("error", InputError's message) or ("crash", traceback)})."""
    done: dict[int, list[T]] = {}
    while len(taken := os.read(queue, 2)) == 2:  # the numbers were written whole: reads take two bytes
        number = int.from_bytes(taken, "little")
        try:
            results = []
            for item in runs[number]:
                results.append(each(item))
                advance()
            done[number] = results
        except InputError as error:
            return done, {number: ("error", str(error))}
        except Exception:
            import traceback  # only for a bug's report

            return done, {number: ("crash", traceback.format_exc())}
    return done, {}


def _forked(queue: int, runs: list[Sequence[A]], each: Callable[[A], T]) -> tuple[int, int]:
    """A child process mapping runs taken from `queue`, sending back _mapped_runs()' outcome;
    (its pid, the reading end of its pipe)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid:
        os.close(writer)
        return pid, reader
    status = 0
    try:  # the child: never returns, exits without the parent's atexit work or buffered output
        os.close(reader)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the parent, which ends it
        outcome = _mapped_runs(queue, runs, each)
        with os.fdopen(writer, "wb") as pipe:
            pickle.dump(outcome, pipe, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def _workers() -> int:
    """How many processes share the work: KABIGATE_JOBS when set (1: this process alone); else one
    per core this process may run on (at most 8), less those other processes are running on right
    now (/proc/loadavg's count of runnable tasks, this one included): on a busy machine a child
    only competes with this process for a core and adds its fork and copy-on-write costs."""
    jobs = os.environ.get("KABIGATE_JOBS", "")
    if jobs:
        if not jobs.isdigit() or int(jobs) < 1:
            raise InputError(f"KABIGATE_JOBS={jobs!r}: not a number of processes (1 or more)")
        return int(jobs)
    cores = min(len(os.sched_getaffinity(0)), 8)
    try:
        with open("/proc/loadavg") as loadavg:
            runnable = int(loadavg.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return cores
    return max(1, min(cores, cores - (runnable - 1)))


def _forkable() -> bool:
    """Whether children may be forked from here: from the main thread of a process that may fork
    (the command line, a service's main loop); a Celery worker (daemonic) may not, a web request's
    thread should not. multiprocessing is imported only then (~10 ms of every start otherwise)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    import multiprocessing

    return not multiprocessing.current_process().daemon
