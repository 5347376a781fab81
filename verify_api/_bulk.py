"""``yinxin issue-bulk``: migrate existing (paper) licences from a JSON Lines file.

Each line is one issuance request. Lines are issued in batches, one
transaction per batch; a bad line is reported with its number and the rest go
on. Every line carries an implicit idempotency key (the hash of its canonical
request), so running the same file again after an interruption issues
nothing twice: lines already done come back as "already issued".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import orjson
from tqdm import tqdm

from schemas import parse_licence_request
from schemas.errors import InvalidInput, YinxinError
from vault import BulkItem, BulkOutcome, Vault, request_hash
from verify_api.wiring import freeze_startup_objects

__all__ = ["run_bulk"]

MAX_LINE_BYTES = 65536
MAX_PRINTED_ERRORS = 50


def run_bulk(vault: Vault, args: argparse.Namespace, *, actor: str) -> int:
    source = Path(args.file)
    if not source.is_file():
        raise InvalidInput(f"bulk file {source} does not exist or is not a file")
    if not 1 <= args.batch_size <= 5000:
        raise InvalidInput("--batch-size must be between 1 and 5000")
    results_path = Path(args.results) if args.results else source.with_name(source.name + ".results.jsonl")
    with source.open("rb") as fh:
        total = sum(1 for _ in fh)
    # A long job: the collector should not walk the start-up heap again every 5 000 licences.
    freeze_startup_objects()

    counts = {"issued": 0, "already_issued": 0, "failed": 0}
    errors: list[dict[str, Any]] = []
    started = time.perf_counter()
    with (
        source.open("rb") as fh,
        results_path.open("w", encoding="utf-8") as out,
        tqdm(
            total=total,
            unit="lines",
            file=sys.stderr,
            disable=None if not args.json else True,
            desc="issuing",
            dynamic_ncols=True,
        ) as bar,
    ):
        batch: list[BulkItem] = []
        early: list[BulkOutcome] = []  # this batch's lines that failed before reaching the vault
        pending: tuple[Future[list[BulkOutcome]], list[BulkOutcome], int] | None = None

        def record(outcome: BulkOutcome) -> None:
            line: dict[str, Any] = {"line": outcome.line}
            if outcome.error is not None:
                counts["failed"] += 1
                line.update(error=outcome.error, code=outcome.error_code)
                errors.append(line)
                if not args.json and len(errors) <= MAX_PRINTED_ERRORS:
                    tqdm.write(f"line {outcome.line}: {outcome.error}", file=sys.stderr)
            else:
                counts["issued" if outcome.created else "already_issued"] += 1
                line.update(identifier=outcome.identifier, created=outcome.created)
            out.write(orjson.dumps(line).decode("utf-8") + "\n")

        def collect() -> None:
            nonlocal pending
            if pending is not None:
                future, failed_early, lines = pending
                pending = None
                for outcome in sorted([*future.result(), *failed_early], key=lambda o: o.line):
                    record(outcome)
                bar.update(lines)

        def flush() -> None:
            nonlocal pending
            collect()
            if batch or early:
                # The vault works on this batch (signing, inserting, the durable commit) while
                # this thread parses the next one; results are still written in line order.
                future = pool.submit(vault.issue_batch, list(batch), actor=actor, licences=False)
                pending = (future, list(early), len(batch) + len(early))
                batch.clear()
                early.clear()

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="yinxin-bulk") as pool:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    bar.update(1)
                    continue
                try:
                    if len(raw) > MAX_LINE_BYTES:
                        raise InvalidInput(f"line is longer than {MAX_LINE_BYTES} bytes")
                    request = parse_licence_request(raw, max_bytes=MAX_LINE_BYTES)
                except YinxinError as exc:
                    early.append(BulkOutcome(number, error=str(exc), error_code=exc.code))
                    continue
                digest = request_hash(request)
                batch.append(BulkItem(number, request, "bulk:" + digest, digest))
                if len(batch) >= args.batch_size:
                    flush()
            flush()
            collect()
    elapsed = time.perf_counter() - started
    summary = {
        **counts,
        "lines": total,
        "seconds": round(elapsed, 3),
        "rate_per_second": round((counts["issued"] + counts["already_issued"]) / elapsed, 1)
        if elapsed
        else None,
        "results": str(results_path),
        "errors": errors[:1000],
    }
    _print_summary(args, summary, sys.stdout)
    return 0 if counts["failed"] == 0 else 2


def _print_summary(args: argparse.Namespace, summary: dict[str, Any], stream: IO[str]) -> None:
    if args.json:
        stream.write(json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
        return
    stream.write(
        f"issued {summary['issued']}, already issued {summary['already_issued']}, "
        f"failed {summary['failed']} of {summary['lines']} lines in {summary['seconds']} s; "
        f"per-line results in {summary['results']}\n"
    )
    if summary["failed"] > MAX_PRINTED_ERRORS:
        stream.write(f"(only the first {MAX_PRINTED_ERRORS} errors were printed; see the results file)\n")
