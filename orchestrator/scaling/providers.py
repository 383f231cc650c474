"""How a scaler gets workers: processes on this host (`local`), or whatever a command
does (`command`: `kubectl scale …`, `aws autoscaling set-desired-capacity …`, `docker
compose up -d --scale …`).

Releasing is the same for both: the scaler asks the worker to drain through Redis
(`Keys.release`), which works whatever started it and wherever it runs. A provider's
`release` only adds what its platform needs (a command that lowers the desired count).
"""

from __future__ import annotations

import os
import re
import signal
import string
import subprocess
import sys
from collections.abc import Sequence
from contextlib import suppress
from typing import Protocol

import anyio
import structlog
from anyio.abc import ByteReceiveStream, Process, TaskGroup

from orchestrator.pools import ScalerSettings
from orchestrator.settings import Settings

log = structlog.get_logger("orchestrator.scaler")
SIGNAL_GAP = 0.2  # seconds between a first and a second SIGTERM to the same child
OUTPUT_LIMIT = 500  # characters of a command's output kept in the log
LAUNCH_FIELDS = frozenset({"pool", "target", "count", "launch_id"})
RELEASE_FIELDS = frozenset({"pool", "target", "worker"})
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)


class LaunchError(Exception):
    """A launch or release that did not happen; the message is one line for the log."""


class Provider(Protocol):
    async def run(self) -> None:
        """What the provider does in the background while the scaler runs (forever)."""

    async def launch(self, launch_ids: Sequence[str], target: int) -> None: ...

    async def release(self, worker_id: str, target: int) -> None: ...

    async def abandon(self, launch_id: str) -> None:
        """A launch that never sent a heartbeat: make sure it does not linger."""

    async def shutdown(self) -> None:
        """This conductor stops: what it runs itself stops too (drained). Idempotent."""

    async def hurry(self) -> None:
        """The operator asked twice: what it runs itself stops at once, jobs handed back."""


def placeholders(template: str) -> set[str]:
    """The `{names}` a command template uses."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def redact(text: str) -> str:
    """`text` without the passwords of URLs in it nor the values of secret-looking
    environment variables: command lines and their output go to logs."""
    text = _URL_PASSWORD.sub(r"\g<scheme>***@", text)
    for name, value in os.environ.items():
        if len(value) >= 6 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, "***")
    return text


class LocalProvider:
    """Real `orchestrator worker --pool P` processes on this host, in their own sessions
    (the terminal's Ctrl-C reaches the conductor, which stops them in order). Each gets
    `--idle-exit` as a safety net: it leaves by itself if no scaler is left to release it.
    """

    def __init__(self, settings: Settings, pool: str, config: ScalerSettings) -> None:
        self._settings = settings
        self._pool = pool
        self._config = config
        self._children: dict[str, Process] = {}
        self._relays: TaskGroup | None = None
        self._signalled: dict[str, int] = {}  # launch id → SIGTERMs sent

    async def run(self) -> None:
        """Relay the children's log lines to this process's stdout, whole lines at a time:
        processes writing to one file by themselves can split each other's lines."""
        async with anyio.create_task_group() as relays:
            self._relays = relays
            try:
                await anyio.sleep_forever()
            finally:
                # The children drain while their relays (shielded) still read them.
                with anyio.CancelScope(shield=True):
                    await self.shutdown()

    async def launch(self, launch_ids: Sequence[str], target: int) -> None:
        config = self._config
        idle_exit = max(2 * config.idle_release_after + 10, 30.0)
        env = {
            **os.environ,
            "ORCHESTRATOR_REDIS_URL": self._settings.redis_url,
            "ORCHESTRATOR_NAMESPACE": self._settings.namespace,
        }
        for launch_id in launch_ids:
            command = [
                sys.executable, "-m", "orchestrator", "worker", "--pool", self._pool,
                "--concurrency", str(config.slots_per_worker), "--launch-id", launch_id,
                "--idle-exit", f"{idle_exit:g}",
                # A Redis that stops answering as it starts is waited out, as by up's
                # workers: the scaler launched it for work that is still there.
                "--wait-for-redis",
            ]  # fmt: skip
            try:
                child = await anyio.open_process(
                    command, stdin=None, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    env=env, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                raise LaunchError(f"could not start a worker process: {exc}") from exc
            self._children[launch_id] = child
            if self._relays is not None and child.stdout is not None:
                self._relays.start_soon(_relay_lines, child.stdout)
        self.reap()

    async def release(self, worker_id: str, target: int) -> None:
        """Nothing to add: the worker drains and exits on the release request."""

    async def abandon(self, launch_id: str) -> None:
        child = self._children.pop(launch_id, None)
        if child is not None and child.returncode is None:
            child.kill()

    def reap(self) -> list[str]:
        """Forget children that exited; returns their launch ids."""
        gone = [lid for lid, child in self._children.items() if child.returncode is not None]
        for launch_id in gone:
            del self._children[launch_id]
        return gone

    async def hurry(self) -> None:
        """A worker's second SIGTERM hands its running jobs back and exits: every child
        gets its second, whether its drain (from `shutdown`) has begun or not."""
        await self._signal(2)

    async def _signal(self, times: int) -> None:
        """Bring every live child to `times` SIGTERMs in all. Two signals sent back to back
        can arrive as one (a pending signal is not queued twice), hence the pause."""
        for turn in range(1, times + 1):
            due = [
                (lid, child) for lid, child in self._children.items()
                if child.returncode is None and self._signalled.get(lid, 0) < turn
            ]  # fmt: skip
            if not due:
                continue
            if turn > 1:
                await anyio.sleep(SIGNAL_GAP)
            for launch_id, child in due:
                with suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
                self._signalled[launch_id] = turn

    async def shutdown(self) -> None:
        """SIGTERM every child (they drain within grace_period), then wait for them."""
        children = [c for c in self._children.values() if c.returncode is None]
        await self._signal(1)
        with anyio.move_on_after(self._settings.grace_period + 10):
            for child in children:
                await child.wait()
        for child in children:
            if child.returncode is None:
                child.kill()
        self._children.clear()


class CommandProvider:
    """Shell commands, Slurm's ResumeProgram/SuspendProgram style, each with a timeout;
    a failure is a `LaunchError` (the scaler backs off), its output logged redacted."""

    def __init__(self, pool: str, config: ScalerSettings) -> None:
        self._pool = pool
        self._config = config

    async def launch(self, launch_ids: Sequence[str], target: int) -> None:
        assert self._config.launch is not None  # settings require it for this provider
        command = self._config.launch.format(
            pool=self._pool, target=target, count=len(launch_ids), launch_id=",".join(launch_ids)
        )
        await self._run("launch", command)

    async def release(self, worker_id: str, target: int) -> None:
        if self._config.release:
            command = self._config.release.format(pool=self._pool, target=target, worker=worker_id)
            await self._run("release", command)

    async def run(self) -> None:
        """Nothing in the background: the platform runs the workers."""
        await anyio.sleep_forever()

    async def abandon(self, launch_id: str) -> None:
        """The platform owns what it started; lowering the target is the next launch's."""

    async def shutdown(self) -> None:
        """Workers a platform runs outlive this conductor; another scaler takes over."""

    async def hurry(self) -> None:
        """The platform's workers are not this process's to hurry."""

    async def _run(self, what: str, command: str) -> None:
        shown = redact(command)
        try:
            with anyio.fail_after(self._config.command_timeout):
                done = await anyio.run_process(command, check=False)
        except TimeoutError:
            raise LaunchError(
                f"{what} command timed out after {self._config.command_timeout:g} s: {shown}"
            ) from None
        except OSError as exc:
            raise LaunchError(f"{what} command could not run ({exc}): {shown}") from exc
        output = redact((done.stdout + done.stderr).decode(errors="replace").strip())
        output = " ".join(output.split())[:OUTPUT_LIMIT]
        if done.returncode != 0:
            raise LaunchError(f"{what} command exited {done.returncode}: {shown}: {output}")
        log.info("scaler_command", pool=self._pool, action=what, command=shown, output=output)


async def _relay_lines(stream: ByteReceiveStream) -> None:
    """Until the child exits (its output ends), even while the scaler stops."""
    pending = b""
    output = sys.stdout.buffer
    with (
        anyio.CancelScope(shield=True),
        suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError),
    ):
        async for chunk in stream:
            pending += chunk
            whole, newline, pending = pending.rpartition(b"\n")
            if newline:
                output.write(whole + newline)
                output.flush()
    if pending:
        output.write(pending + b"\n")
        output.flush()


def provider_for(settings: Settings, pool: str, config: ScalerSettings) -> Provider:
    if config.provider == "command":
        return CommandProvider(pool, config)
    return LocalProvider(settings, pool, config)
