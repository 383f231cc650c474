"""`orchestrator up`: the whole stack on this machine until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import structlog

from orchestrator.commands.common import add_common_options, positive_int, run_async
from orchestrator.errors import EXIT_FAILURE, EXIT_OK, UserError
from orchestrator.settings import Settings, redact_url
from orchestrator.stack.local import (
    DEFAULT_REDIS_PORT,
    Shutdown,
    StackPlan,
    WebPlan,
    local_stack,
    wait_for_exit,
    with_local_scaler,
)
from orchestrator.web.access import token_for

TOKEN_FILE = "web-token"  # in the data directory, beside stack.json

ORDER = 80
log = structlog.get_logger("orchestrator.up")


def register(commands: Any) -> None:
    up = commands.add_parser(
        "up",
        help="run the whole stack here: Redis, conductor, a metal and a cloud worker",
        description=(
            "Start a conductor, one worker process per pool and the dashboard (`orchestrator "
            "web`, its URL printed at start) against REDIS_URL, or, "
            "when no Redis URL is set, against an embedded Redis server (data kept in "
            "DATA_DIR/redis with the append-only file on, so a restart loses nothing). "
            "The stack is recorded in DATA_DIR/stack.json, so `dispatch`, `status`, "
            "`verify`… run from this directory use it without being told. Ctrl-C or "
            "SIGTERM stops everything in order: the conductor stops taking work, workers "
            "finish running jobs within grace_period (receipts written), Redis stops last. "
            "A second Ctrl-C stops at once: running jobs go back in line, nothing is lost."
        ),
    )
    up.add_argument("--metal", type=positive_int, default=4, help="metal worker slots (4)")
    up.add_argument("--cloud", type=positive_int, default=8, help="cloud worker slots (8)")
    up.add_argument(
        "--elastic",
        action="store_true",
        help="start no cloud worker: the conductor's scaler launches cloud workers here "
        "(up to --cloud slots) when metal is full and releases them when idle (a pool "
        "whose settings have a [pools.scaler] is always run so)",
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the embedded Redis keeps its data and the stack is recorded "
        "(default: the data_dir setting, ./data)",
    )
    up.add_argument(
        "--redis-port", type=positive_int, default=None,
        help=f"embedded Redis port (default: {DEFAULT_REDIS_PORT}, or any free port when "
        "that one is taken; the other commands find it either way)",
    )  # fmt: skip
    up.add_argument(
        "--web-port", type=positive_int, default=None,
        help="the dashboard's port (default: 8765, or any free port when that one is "
        "taken; its URL is printed at start)",
    )  # fmt: skip
    up.add_argument("--no-web", action="store_true", help="start no dashboard")
    add_common_options(up)
    up.set_defaults(command=_up, service=True, uses_stack=False)


def kept_token(data_dir: Path, made: str) -> str:
    """The dashboard token `up` keeps in `<data_dir>/web-token` (readable by its owner
    only), made on the first `up` and the same on every later one: so a page left open,
    which keeps the token it was opened with, still acts after `up` restarts. Before the
    stack starts, so plain file I/O."""
    path = data_dir / TOKEN_FILE
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    except OSError as exc:
        raise UserError(f"cannot read the dashboard token {path}: {exc}") from None
    if kept:
        return kept
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(made + "\n")
    except OSError as exc:
        raise UserError(f"cannot keep the dashboard token in {path}: {exc}") from None
    return made


def _up(options: argparse.Namespace, settings: Settings) -> int:
    env: dict[str, str] = {}
    if options.elastic:
        settings, env = with_local_scaler(settings, "cloud", options.cloud)
    web, made_up = None, False
    data_dir = options.data_dir or settings.data_dir
    if not options.no_web:
        token, made_up = token_for(settings, "127.0.0.1")
        if made_up:  # kept with the stack's data: a tab left open survives a restart
            token = kept_token(data_dir, token)
        web = WebPlan(token, port=options.web_port, shown=made_up)
    plan = StackPlan(
        concurrency={"metal": options.metal, "cloud": options.cloud},
        data_dir=data_dir,
        redis_port=options.redis_port,
        env=env,
        web=web,
    )
    shutdown = Shutdown()

    async def up() -> int:
        exited: list[str] = []
        # Signals are taken from the first instant: a Ctrl-C while the stack starts
        # must stop it in order too, never leave half of it behind.
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as tasks:

                async def on_signals() -> None:
                    async for signum in signals:
                        log.info(
                            "stopping" if not shutdown.requested.is_set() else "hurrying",
                            signal=signal.Signals(signum).name,
                            hint=None
                            if shutdown.requested.is_set()
                            else "Ctrl-C again: running jobs go back in line instead of finishing",
                        )
                        shutdown.request()

                tasks.start_soon(on_signals)
                async with local_stack(settings, plan, shutdown) as stack:
                    web_url = stack.web_url
                    if web_url is not None and web is not None and made_up:
                        web_url += f"#token={web.token}"  # opened so, its buttons work
                    log.info(
                        "ready",
                        redis=redact_url(stack.redis_url),
                        web=web_url,
                        stack=str(plan.data_dir / "stack.json"),
                        hint="other commands run from this directory use this stack",
                    )

                    async def on_child_exit() -> None:
                        exited.append(await wait_for_exit(stack))
                        shutdown.requested.set()

                    async with anyio.create_task_group() as watching:
                        watching.start_soon(on_child_exit)
                        await shutdown.requested.wait()
                        watching.cancel_scope.cancel()
                    if exited:
                        log.error("child_exited", process=exited[0], stopping="everything")
                tasks.cancel_scope.cancel()
        return EXIT_FAILURE if exited else EXIT_OK

    code: int = run_async(up)
    return code
