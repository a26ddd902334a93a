"""Many independent items shared out between this process and a forked child per other core: a
tree's module files read, a tree's modules judged. A standard tool being single-threaded is its
limit, not ours.

The items are cut in runs whose numbers go down a pipe; each process takes the next run when it
is done with one (on a loaded machine a slower process takes fewer), and a child sends back each
run's results, pickled, through a pipe of its own as soon as it has made them. A forked child shares the parent's
memory as it was: a mapping may read what the parent built (a tree's modules, a kernel) without
pickling it. (A multiprocessing pool costs its parent a third more CPU: its threads, a pickle per
task; and it pickles what it is given.)"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import signal
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

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


def map_in_processes(items: Sequence[A], each: Callable[[A], T], advance: Callable[..., None] = lambda *_: None,
                     then: Callable[[A, T], T] | None = None) -> list[T]:
    """[each(item) for item in items], computed by this process and a forked child per other core
    when there are enough items, an idle core and the process may fork (_forkable()); the first
    InputError in the items' order is raised (every run before it was mapped). `each` runs in the
    children on the parent's memory as it was: what it returns must pickle. `then(item, result)`,
    when given, is made of each result by this process: of its own as it makes them, of a child's
    as each of its runs arrives, between this process's own runs (so that the work is shared out
    with it counted)."""
    with SharedMap(items, each, then) as shared:
        return shared.results(advance)


class SharedMap(Generic[A, T]):
    """map_in_processes() begun: the children start on the runs at once, this process joins them in
    results(); in between it may do other work (`check` reads its kernel while they read modules)."""

    def __init__(self, items: Sequence[A], each: Callable[[A], T], then: Callable[[A, T], T] | None = None):
        self.items, self.each, self.finish = items, each, then if then is not None else _as_it_is
        self.children: list[_Child] = []
        self.queue = -1
        workers = _workers()  # first: a bad KABIGATE_JOBS is told whatever the number of items
        if workers < 2 or len(items) < PARALLEL_MIN_ITEMS or not _forkable():
            return
        size = max(MAPPED_RUN, -(-len(items) // MOST_RUNS))
        self.runs = [items[start:start + size] for start in range(0, len(items), size)]
        self.queue, queued = os.pipe()
        os.write(queued, b"".join(number.to_bytes(2, "little") for number in range(len(self.runs))))
        os.close(queued)
        try:
            for _ in range(workers - 1):
                self.children.append(_Child.forked(self.queue, self.runs, each))
        except BaseException:
            self.close()
            raise

    def results(self, advance: Callable[..., None] = lambda *_: None) -> list[T]:
        if self.queue < 0:
            results = []
            for item in self.items:
                results.append(self.finish(item, self.each(item)))
                advance()
            return results
        runs, finish = self.runs, self.finish
        done: dict[int, list[T]] = {}
        failed: dict[int, tuple[str, str]] = {}

        def arrived(number: int, kind: str, payload: Any) -> None:
            if kind == "done":
                done[number] = [finish(item, result) for item, result in zip(runs[number], payload)]
                for _ in payload:
                    advance()
            else:
                failed[number] = (kind, payload)

        try:
            while not failed and len(taken := os.read(self.queue, 2)) == 2:  # the numbers were written whole
                number = int.from_bytes(taken, "little")
                arrived(number, *_mapped_run(runs[number], self.each))
                for child in self.children:
                    child.receive(arrived, wait=False)
            os.close(self.queue)
            self.queue = -1
            for child in self.children:
                child.receive(arrived, wait=True)
                child.reap()
            self.children = []
        finally:
            self.close()
        if not failed and len(done) < len(runs):
            raise RuntimeError("a mapping process ended without sending all its results")
        if failed:
            kind, message = failed[min(failed)]  # the first in order: every run before it was mapped
            if kind == "error":
                raise InputError(message)
            raise RuntimeError(f"a mapping process failed: {message}")
        return [result for number in range(len(runs)) for result in done[number]]

    def close(self) -> None:
        """The children stopped, if they are still at work (an error: they are not waited for)."""
        if self.queue >= 0:
            os.close(self.queue)
            self.queue = -1
        for child in self.children:
            child.kill()
        self.children = []

    def __enter__(self) -> SharedMap[A, T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_it_is(_item, result):
    return result


def _mapped_run(run: Sequence[A], each: Callable[[A], T]) -> tuple[str, Any]:
    """("done", [each(item)...]), ("error", an InputError's message) or ("crash", a traceback)."""
    try:
        return "done", [each(item) for item in run]
    except InputError as error:
        return "error", str(error)
    except Exception:
        import traceback  # only for a bug's report

        return "crash", traceback.format_exc()


# A child's pipe holds this much (Linux's default is 64 KiB): a run's results (a tree's 64 modules as
# the C reader's facts, ~100 KiB) are written whole without waiting for the parent to read them.
PIPE_SIZE = 1 << 20
_LENGTH = struct.Struct("<Q")


class _Child:
    """A forked process mapping runs taken from the queue, each run's outcome sent back as soon as
    it is made: an 8-byte length and a pickle of (run number, kind, payload)."""

    def __init__(self, pid: int, reader: int):
        self.pid, self.reader, self.pending, self.ended = pid, reader, bytearray(), False

    @classmethod
    def forked(cls, queue: int, runs: list[Sequence[A]], each: Callable[[A], T]) -> _Child:
        reader, writer = os.pipe()
        with contextlib.suppress(OSError):  # a smaller pipe only makes the child wait for the parent
            fcntl.fcntl(writer, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        pid = os.fork()
        if pid:
            os.close(writer)
            os.set_blocking(reader, False)
            return cls(pid, reader)
        status = 0
        try:  # the child: never returns, exits without the parent's atexit work or buffered output
            os.close(reader)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the parent, which ends it
            while len(taken := os.read(queue, 2)) == 2:
                number = int.from_bytes(taken, "little")
                kind, payload = _mapped_run(runs[number], each)
                message = pickle.dumps((number, kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
                with memoryview(_LENGTH.pack(len(message)) + message) as unsent:
                    while unsent:
                        unsent = unsent[os.write(writer, unsent):]
                if kind != "done":
                    break
        except BaseException:
            status = 1
        finally:
            os._exit(status)

    def receive(self, arrived: Callable[[int, str, Any], None], wait: bool) -> None:
        """Each whole run the child has sent to `arrived`; with `wait`, until the child has sent all."""
        if wait:
            os.set_blocking(self.reader, True)
        while not self.ended:
            try:
                data = os.read(self.reader, PIPE_SIZE)
            except BlockingIOError:
                return
            if not data:
                self.ended = True
                if self.pending:
                    arrived(-1, "crash", "a mapping process ended in the middle of a run's results")
                break
            self.pending += data
            while len(self.pending) >= _LENGTH.size:
                (length,) = _LENGTH.unpack_from(self.pending)
                if len(self.pending) < _LENGTH.size + length:
                    break
                number, kind, payload = pickle.loads(memoryview(self.pending)[_LENGTH.size:_LENGTH.size + length])
                del self.pending[:_LENGTH.size + length]
                arrived(number, kind, payload)

    def reap(self) -> None:
        os.close(self.reader)
        _pid, status = os.waitpid(self.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"a mapping process failed: exit status {os.waitstatus_to_exitcode(status)}")

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        with contextlib.suppress(OSError):
            os.close(self.reader)


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
