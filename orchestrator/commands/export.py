"""`orchestrator export --batch NAME`: write a batch's archive now, as the pruner would
before removing it — and remove nothing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import anyio

from orchestrator.commands.common import add_common_options, run_async
from orchestrator.errors import EXIT_OK, UserError
from orchestrator.keys import BATCH_NAME, Keys
from orchestrator.settings import Settings

ORDER = 55


def register(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="write a batch's archive (its record, receipts and dead letters) to a file",
        description=(
            "Write batch NAME as the retention pruner archives it before removing it: "
            "one gzip JSONL file with its manifest path, its dispatch record, every "
            "receipt, its dead letters and its cancelled jobs, written whole or not at "
            "all. Nothing is removed from Redis. `verify --batch NAME` reads such a file "
            "from archive_dir once the batch has left Redis."
        ),
    )
    export.add_argument("--batch", required=True, metavar="NAME", help="the batch to export")
    export.add_argument(
        "--to",
        type=Path,
        metavar="PATH",
        help="the file to write (default: <archive_dir>/NAME.jsonl.gz)",
    )
    add_common_options(export)
    export.set_defaults(command=_export)


def _export(options: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.connection import connect
    from orchestrator.retention.archive import Written, archive_file, write_archive
    from orchestrator.retention.dead_letters import letters_by_batch

    batch: str = options.batch
    if not BATCH_NAME.match(batch):
        raise UserError(f"--batch {batch!r} cannot be a batch name")
    target: Path = options.to or archive_file(settings.archive_path, batch)

    async def export() -> Written:
        async with connect(
            settings.redis_url, namespace=settings.namespace, name="orchestrator-export"
        ) as redis:
            keys = Keys(settings.namespace)
            letters = (await letters_by_batch(redis, keys)).get(batch, [])
            try:
                return await write_archive(redis, keys, batch, target, letters)
            except LookupError:
                kept = archive_file(settings.archive_path, batch)
                gone = await anyio.Path(kept).is_file()
                pruned = f"; it was pruned, its archive is {kept}" if gone else ""
                raise UserError(f"no batch named {batch!r} in this Redis{pruned}") from None
            except OSError as exc:
                raise UserError(f"cannot write {target}: {exc}") from None

    written: Written = run_async(export)
    print(
        f"wrote {written.path}: {written.receipts} receipts, {written.dead_letters} dead "
        f"letters, {written.cancelled} cancelled, {written.size} bytes"
    )
    return EXIT_OK
