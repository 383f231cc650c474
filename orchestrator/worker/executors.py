"""Where a worker runs its sync (plain `def`) tasks: never on the event loop, which must
stay free for the heartbeat, the claims and the drain.

- `process` (the default): one child process per slot, started with the worker and
  reused from job to job, as Celery's prefork pool. CPU-bound tasks use as many cores
  as the worker has slots; a job stopped by `cancel --running`, its timeout or a second
  signal is stopped by ending its child, which is replaced; a child that crashes or is
  killed mid-job (the OOM killer) fails that job, which is retried or dead-lettered as
  any failure, and is replaced too. `max_jobs_per_child` recycles a child that leaks.
  Children come from a fork server (`multiprocessing`'s forkserver) that has imported
  the task modules once, so a replacement starts in milliseconds and shares their pages.
- `thread`: the worker's threads, one per slot: no process to start, for I/O-bound code.
  A running thread cannot be stopped: cancel, a timeout or a second signal take effect
  when the function returns (and a stop then puts the job back in line).

Async tasks are awaited on the loop whatever the executor; a worker whose tasks are all
async starts no child at all.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from functools import partial
from multiprocessing.context import ForkServerContext
from multiprocessing.reduction import ForkingPickler
from typing import Any, Protocol

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from orchestrator.errors import UserError
from orchestrator.job_context import JobContext, RetryLater
from orchestrator.registry import TaskRegistry
from orchestrator.worker import child

log = structlog.get_logger("orchestrator.worker")
START_TIMEOUT = 60.0  # seconds a child has to import the task packages
STOP_TIMEOUT = 5.0  # seconds an idle child has to exit when asked, before it is killed


class TaskFailed(Exception):
    """A sync task raised in its child process: its type's name and message, as the
    receipt says them for an async task's exception (the object itself stays there)."""

    def __init__(self, type_name: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.details = details


class ChildDied(TaskFailed):
    """The child process running the job died (killed, crashed) before it answered."""


class Executor(Protocol):
    async def run(
        self, name: str, function: Any, args: list[Any], kwargs: dict[str, Any], job: JobContext
    ) -> Any:
        """The task's result; its exception (or `TaskFailed`, `RetryLater`) otherwise."""


class ThreadExecutor:
    def __init__(self, slots: int) -> None:
        self._limiter = anyio.CapacityLimiter(slots)

    async def run(
        self, name: str, function: Any, args: list[Any], kwargs: dict[str, Any], job: JobContext
    ) -> Any:
        call = partial(function, *args, **kwargs)  # the job's context goes with the thread
        return await anyio.to_thread.run_sync(call, limiter=self._limiter)


class _Child:
    """One child process and the parent's end of its pipe, read and written on the event
    loop: a job's request and reply cost no thread, and the reply wakes the loop
    directly. The child's end is a plain `multiprocessing` connection; this end speaks its
    framing (`_frame`) over an asyncio stream."""

    def __init__(self, context: ForkServerContext, packages: tuple[str, ...]) -> None:
        """Blocking (run in a thread): the process started; `open` must follow, on the loop."""
        ours, theirs = multiprocessing.Pipe(duplex=True)
        self.process = context.Process(
            target=child.serve, args=(theirs, packages, os.getpid()), name="orchestrator-task"
        )
        try:
            self.process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        # A socket of our end of the pair, for the loop's streams.
        self._socket = socket.socket(fileno=os.dup(ours.fileno()))
        ours.close()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.jobs = 0

    async def open(self) -> None:
        """The child's first word, once its task modules are imported."""
        self._reader, self._writer = await asyncio.open_unix_connection(sock=self._socket)
        with anyio.move_on_after(START_TIMEOUT) as waiting:
            reply = await self._reply()
        if waiting.cancelled_caught:
            raise UserError(f"a task process did not start within {START_TIMEOUT:g} s")
        if reply[0] != "ready":
            raise UserError(f"a task process could not import the tasks: {reply[1]}: {reply[2]}")

    async def call(
        self, name: str, args: list[Any], kwargs: dict[str, Any], job: JobContext
    ) -> tuple[Any, ...]:
        """Send one request and wait for its reply. Cancelled meanwhile, the child's state
        is unknown: the caller retires it."""
        try:
            request = _frame((name, args, kwargs, job))
        except Exception as exc:  # arguments pickle refuses (only a Python caller's)
            return ("error", "UnpicklableArguments", f"cannot send to the task's process: {exc}")
        assert self._writer is not None
        try:
            self._writer.write(request)
            await self._writer.drain()
        except OSError:  # the child is gone (its end closed): said by its reply's read
            pass
        return await self._reply()

    async def _reply(self) -> tuple[Any, ...]:
        assert self._reader is not None
        try:
            (size,) = _SIZE.unpack(await self._reader.readexactly(_SIZE.size))
            if size == -1:  # over 2 GiB: multiprocessing's long header follows
                (size,) = _LONG_SIZE.unpack(await self._reader.readexactly(_LONG_SIZE.size))
            reply: tuple[Any, ...] = ForkingPickler.loads(await self._reader.readexactly(size))
        except (asyncio.IncompleteReadError, OSError):
            return ("error", "ChildDied", await anyio.to_thread.run_sync(self.death), "")
        return reply

    def death(self) -> str:
        """Blocking: what became of the child, once it is gone."""
        self.process.join(1.0)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:  # a real-time signal has no name
                name = f"signal {-code}"
            why = " (out of memory?)" if name == "SIGKILL" else ""
            how = f"was killed by {name}{why}"
        else:
            how = f"exited with code {code}" if code is not None else "stopped answering"
        return f"the task's process (pid {self.process.pid}) {how} during the job"

    async def kill(self) -> None:
        """End the child now, whatever it is doing."""
        self._close()
        await anyio.to_thread.run_sync(self._kill_process)

    async def stop(self) -> None:
        """Ask the child to exit; kill it if it does not."""
        if self._writer is not None:
            with suppress(OSError):
                self._writer.write(_frame(None))
                await self._writer.drain()
        self._close()
        await anyio.to_thread.run_sync(self._join_or_kill)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        else:  # never opened: the socket alone
            self._socket.close()

    def _kill_process(self) -> None:
        # The signal itself, not Process.kill(): that sends nothing once multiprocessing
        # believes the child gone, which a fork server that died makes it believe.
        with suppress(OSError, TypeError):
            os.kill(self.process.pid, signal.SIGKILL)  # type: ignore[arg-type]
        self.process.join(STOP_TIMEOUT)

    def _join_or_kill(self) -> None:
        self.process.join(STOP_TIMEOUT)
        if self.process.is_alive():
            self._kill_process()


# multiprocessing's framing of a message on a connection: a signed 4-byte length, or -1
# and an unsigned 8-byte one when it does not fit; then the pickle.
_SIZE, _LONG_SIZE = struct.Struct("!i"), struct.Struct("!Q")


def _frame(message: Any) -> bytes:
    data = bytes(ForkingPickler.dumps(message))
    if len(data) > 0x7FFFFFFF:
        return _SIZE.pack(-1) + _LONG_SIZE.pack(len(data)) + data
    return _SIZE.pack(len(data)) + data


class ProcessExecutor:
    """`slots` children; a job takes an idle one and gives it back, or hands it to the
    executor's own replacer (ended, and a fresh one started) when it was stopped, died
    or served `max_jobs`. The job's task never waits for a replacement: whatever
    cancels it, or however a start fails, no slot is lost with it."""

    def __init__(
        self, slots: int, packages: tuple[str, ...], modules: Iterable[str], max_jobs: int
    ) -> None:
        self._slots = slots
        self._packages = packages
        self._max_jobs = max_jobs
        self._context = multiprocessing.get_context("forkserver")
        # The fork server imports these once; every child is forked with them loaded.
        self._context.set_forkserver_preload(["orchestrator.worker.child", *sorted(modules)])
        # Idle children, counted by a semaphore and taken with no await in between, so a
        # cancellation can never fall between a child handed over and a job holding it.
        self._idle: deque[_Child] = deque()
        self._free = anyio.Semaphore(0)
        self._retire_send: MemoryObjectSendStream[_Child]
        self._retire: MemoryObjectReceiveStream[_Child]
        self._retire_send, self._retire = anyio.create_memory_object_stream[_Child](slots)
        self._children: set[_Child] = set()

    async def start(self) -> None:
        async with anyio.create_task_group() as starting:
            for _ in range(self._slots):
                starting.start_soon(self._add)

    async def replace_retired(self) -> None:
        """The replacer, run by the worker for as long as the executor lives."""
        async for old in self._retire:
            self._children.discard(old)
            await old.kill()
            delay = 0.5
            while True:
                try:
                    await self._add()
                    break
                except (UserError, OSError) as exc:  # the fork server gone, imports failing
                    log.error("task_process_failed", error=str(exc), retry_in=delay)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 30.0)

    async def _add(self) -> None:
        made = await anyio.to_thread.run_sync(_Child, self._context, self._packages)
        self._children.add(made)
        try:
            await made.open()
        except BaseException:
            self._children.discard(made)
            with anyio.CancelScope(shield=True):
                await made.kill()
            raise
        self._idle.append(made)
        self._free.release()

    async def run(
        self, name: str, function: Any, args: list[Any], kwargs: dict[str, Any], job: JobContext
    ) -> Any:
        await self._free.acquire()
        taken = self._idle.popleft()
        healthy = False
        try:
            reply = await taken.call(name, args, kwargs, job)
            healthy = reply[:2] != ("error", "ChildDied")
        finally:
            # Cancelled (cancel --running, a timeout, a stop) or died: the child is
            # ended and replaced; else it serves the next job, up to max_jobs.
            taken.jobs += 1
            if not healthy or (self._max_jobs and taken.jobs >= self._max_jobs):
                self._retire_send.send_nowait(taken)  # never blocks: at most `slots` out
            else:
                self._idle.append(taken)
                self._free.release()
        if reply[0] == "ok":
            return reply[1]
        if reply[0] == "retry":
            raise RetryLater(reply[1], reply[2])
        raise (ChildDied if reply[1] == "ChildDied" else TaskFailed)(*reply[1:])

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as stopping:
                for each in list(self._children):
                    stopping.start_soon(each.stop)
            self._children.clear()


@asynccontextmanager
async def executor(
    kind: str, slots: int, registry: TaskRegistry, packages: tuple[str, ...], max_jobs: int
) -> AsyncIterator[Executor]:
    """The worker's executor for as long as it runs; its children ended on the way out."""
    sync = [definition for definition in registry.values() if not definition.is_async]
    if kind == "thread" or not sync:  # with no sync task, nothing is ever started
        yield ThreadExecutor(slots)
        return
    # Every task's module, not only the sync ones': each child builds the whole registry
    # (`child.serve`), and what the fork server imported first its children share.
    modules = {"orchestrator.registry"} | {d.function.__module__ for d in registry.values()}
    pool = ProcessExecutor(slots, packages, modules, max_jobs)
    try:
        await pool.start()
        log.info("executor_started", executor=kind, children=slots, max_jobs_per_child=max_jobs)
        async with anyio.create_task_group() as replacing:
            replacing.start_soon(pool.replace_retired)
            try:
                yield pool
            finally:
                replacing.cancel_scope.cancel()
    finally:
        await pool.close()
