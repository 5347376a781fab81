"""The crash harness: ``kill -9`` a real ``yinxin issue-bulk`` at a random moment, check, restart.

One :class:`CrashHarness` owns one data directory and one database for all its rounds
(crash, restart, check, continue: the database carries every earlier crash). A round:

1. takes the bulk file in progress (or writes a new one: a few hundred lines over three
   licence types and two issuers, so a batch allocates serials in three groups);
2. starts ``yinxin issue-bulk`` on it as a subprocess with a random ``--batch-size``;
3. kills it with SIGKILL after a random delay, aimed at one of three phases: while it starts
   up (delay from the spawn, 10 % of rounds), before its first commit (from the moment it
   opens its results file: it has the database open and unwraps keys, signs the first batch;
   15 %), or while it issues (from the expected first commit to a quarter past the expected
   end, so some runs finish before the kill lands). Expected times are learned from earlier
   rounds;
4. checks the invariants on the whole database (:meth:`CrashHarness.check`).

A run that finishes must have issued exactly the lines not yet done and found the others
"already issued". :meth:`CrashHarness.finish` runs the file in progress to the end, re-runs
the first file (nothing issued twice), runs ``yinxin audit verify`` and checks that every
line of every file has exactly one licence, found by the line's idempotency key.

Random choices come from generators seeded by (seed, file number) and (seed, round number),
so a seed replays the same files, batch sizes, phases and kill fractions; the wall-clock moment
a fraction turns into depends on the machine. Every round prints what it did.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select, text

from hsm import SignatureAlgorithm
from schemas import LicenceIdentifier, load_licence_types, parse_licence_request
from vault import KEY_PURPOSE_LICENCE, Vault, request_hash
from vault._models import AuditEventRecord, AuditHeadRecord, KeyRecord, LicenceRecord, SerialCounterRecord
from verify_api.settings import Settings
from verify_api.wiring import open_vault

__all__ = ["CrashHarness", "RoundResult", "crash_rounds", "crash_seed"]

YINXIN = str(Path(sys.executable).with_name("yinxin"))
PASSPHRASE = "crash-harness-keystore-passphrase"
MARKET = "11110101000000123B"  # 市场监督管理局: business licences
HEALTH = "11110101000000456Q"  # 卫生健康委员会: hygiene permits, birth registrations (a person holds them)
TYPES = ("11100000000013101Q001", "11100000000013202H001", "11100000000013202H003")
BATCH_SIZES = (10, 25, 50, 100, 250)
# Where kills are aimed: 10 % while the CLI starts up (before it opens its results file), 15 %
# before its first commit (unwrapping keys, signing the first batch), the rest while it issues.
STARTUP_SHARE = 0.1
FIRST_BATCH_SHARE = 0.25
RUN_TIMEOUT = 120.0


def crash_rounds(default: int = 20) -> int:
    return int(os.environ.get("YINXIN_CRASH_ROUNDS", str(default)))


def crash_seed() -> int:
    given = os.environ.get("YINXIN_CRASH_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


@dataclass
class BulkFile:
    number: int
    path: Path
    keys: tuple[str, ...]  # each line's idempotency key: "bulk:" + the hash of its request
    complete: bool = False


@dataclass(frozen=True)
class RoundResult:
    number: int
    file: int
    batch_size: int
    # Where the delay starts: "startup" from the spawn, "first batch" from the results file being
    # opened, "issuing" from the first commit (the audit head moved).
    phase: str
    fraction: float  # the seeded draw: where in the window the kill was aimed
    delay: float  # seconds
    killed: bool  # False: the run finished before the kill landed
    lines: int
    done_before: int
    done_after: int

    def describe(self) -> str:
        outcome = "killed" if self.killed else "finished first"
        return (
            f"round {self.number}: file {self.file} ({self.lines} lines), batch {self.batch_size}, "
            f"{self.phase} +{self.delay:.3f}s (fraction {self.fraction:.3f}) → {outcome} with "
            f"{self.done_after}/{self.lines} lines done (+{self.done_after - self.done_before})"
        )


@dataclass
class _Estimates:
    """Timings learned from earlier runs: they turn a seeded fraction into a delay.

    A run spends *startup* seconds before it opens its results file, then *overhead* seconds
    (unwrapping the holder-data keys, signing the first batch) until its first commit; then
    lines go by at a rate that depends on the batch size (one durable commit per batch).
    """

    startup: float = 1.5
    overhead: float = 0.6
    rates: dict[int, float] = field(default_factory=dict)

    def rate(self, batch_size: int) -> float:
        return self.rates.get(batch_size, min(40.0 * batch_size, 3000.0))

    def learn(self, batch_size: int, lines: int, seconds: float, *, at_least: bool = False) -> None:
        """*lines* were committed in *seconds* after the first commit (*at_least*: or sooner)."""
        if lines < 20 or seconds < 0.05:
            return
        observed = lines / seconds
        known = self.rates.get(batch_size)
        if known is None:
            self.rates[batch_size] = observed
        elif at_least:
            self.rates[batch_size] = max(known, observed)
        else:
            self.rates[batch_size] = 0.5 * known + 0.5 * observed


class CrashHarness:
    def __init__(
        self,
        workdir: Path,
        database_url: str | None,
        seed: int,
        *,
        min_lines: int = 200,
        max_lines: int = 800,
        out: Callable[[str], None] = print,
    ) -> None:
        self.workdir = workdir
        self.home = workdir / "home"
        self.seed = seed
        self.min_lines, self.max_lines = min_lines, max_lines
        self.out = out
        self.settings = Settings(
            home=self.home,
            database_url=database_url,
            environment="development",
            hsm="software",
            keystore_passphrase=SecretStr(PASSPHRASE),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("YINXIN_")}
        env.update(
            YINXIN_HOME=str(self.home),
            YINXIN_ENVIRONMENT="development",
            YINXIN_KEYSTORE_PASSPHRASE=PASSPHRASE,
            YINXIN_HSM="software",
        )
        if database_url:
            env["YINXIN_DATABASE_URL"] = database_url
        self.env = env
        self.files: list[BulkFile] = []
        self.results: list[RoundResult] = []
        self.estimates = _Estimates()
        self.check_seconds = 0.0
        self._stack = ExitStack()
        self._examples = {code: dict(load_licence_types().get(code).example) for code in TYPES}
        self.vault: Vault

    # ---- set-up -----------------------------------------------------------------------------

    def __enter__(self) -> CrashHarness:
        self.out(f"crash harness: seed {self.seed} (replay with YINXIN_CRASH_SEED={self.seed})")
        self.vault = self._stack.enter_context(open_vault(self.settings, migrate=True))
        self.vault.initialise(actor="crash-harness")
        self.vault.add_department(MARKET, "北京市东城区市场监督管理局", actor="crash-harness")
        self.vault.add_department(HEALTH, "北京市东城区卫生健康委员会", actor="crash-harness")
        self.vault.generate_key(MARKET, SignatureAlgorithm.ES256, actor="crash-harness")
        self.vault.generate_key(HEALTH, SignatureAlgorithm.EDDSA, actor="crash-harness")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _new_file(self) -> BulkFile:
        number = len(self.files) + 1
        rng = random.Random(f"{self.seed}:file:{number}")
        count = rng.randint(self.min_lines, self.max_lines)
        lines: list[str] = []
        keys: list[str] = []
        for n in range(count):
            body = dict(self._examples[TYPES[rng.randrange(len(TYPES))]])
            holder = dict(body["holder"])
            holder["name"] = f"{holder['name']}{number}-{n}"  # every line a distinct request
            body["holder"] = holder
            line = json.dumps(body, ensure_ascii=False)
            lines.append(line)
            keys.append("bulk:" + request_hash(parse_licence_request(line)))
        path = self.workdir / f"bulk-{number}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        bulk = BulkFile(number, path, tuple(keys))
        self.files.append(bulk)
        return bulk

    # ---- rounds -----------------------------------------------------------------------------

    def _spawn(self, bulk: BulkFile, batch_size: int, results: Path, log: Path) -> subprocess.Popen[bytes]:
        results.unlink(missing_ok=True)
        with log.open("wb") as err:
            return subprocess.Popen(
                [
                    YINXIN,
                    "issue-bulk",
                    "--file",
                    str(bulk.path),
                    "--results",
                    str(results),
                    "--batch-size",
                    str(batch_size),
                    "--json",
                ],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=err,
            )

    def run_round(self) -> RoundResult:
        number = len(self.results) + 1
        bulk = next((f for f in self.files if not f.complete), None) or self._new_file()
        rng = random.Random(f"{self.seed}:round:{number}")
        batch_size = BATCH_SIZES[rng.randrange(len(BATCH_SIZES))]
        draw = rng.random()
        phase = (
            "startup" if draw < STARTUP_SHARE else "first batch" if draw < FIRST_BATCH_SHARE else "issuing"
        )
        fraction = rng.random()

        done_before = self.done(bulk)
        remaining = len(bulk.keys) - done_before
        head = self._head()
        delay = 0.0
        first: float | None = None
        results = self.workdir / f"round-{number}.results.jsonl"
        log = self.workdir / f"round-{number}.stderr"
        spawned = time.monotonic()
        proc = self._spawn(bulk, batch_size, results, log)
        try:
            if phase == "startup":
                delay = fraction * self.estimates.startup
                _sleep_unless_exited(proc, delay)
            else:
                opened = _wait_for(lambda: results.exists(), proc)
                if opened is not None:
                    self.estimates.startup = 0.7 * self.estimates.startup + 0.3 * (opened - spawned)
                if phase == "first batch":
                    delay = fraction * self.estimates.overhead
                    _sleep_unless_exited(proc, delay)
                elif opened is not None:
                    # Issuing: from its first commit (the audit head moves) to a quarter past the
                    # expected end of the remaining lines.
                    first = _wait_for(lambda: self._head() != head, proc, every=0.01)
                    if first is not None:
                        self.estimates.overhead = 0.7 * self.estimates.overhead + 0.3 * (first - opened)
                        after_first = max(remaining - batch_size, 0)  # lines the first commit left
                        delay = fraction * after_first / self.estimates.rate(batch_size) * 1.25
                        _sleep_unless_exited(proc, delay)
            proc.kill()  # SIGKILL: no handler, no cleanup, no flush
            stdout, _ = proc.communicate(timeout=RUN_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        killed = proc.returncode == -9
        if not killed and proc.returncode != 0:
            raise AssertionError(
                f"round {number}: issue-bulk exited with {proc.returncode} (not killed):\n"
                + log.read_text(errors="replace")[-4000:]
            )

        self.check()
        done_after = self.done(bulk)
        if killed:
            if first is not None:
                # The first commit carried (at most) one batch before the delay started.
                self.estimates.learn(
                    batch_size,
                    done_after - done_before - batch_size,
                    delay,
                    at_least=done_after == len(bulk.keys),
                )
            if done_after == len(bulk.keys):
                # Killed after its last commit: the restart finds every line done.
                self._complete_run(bulk)
        else:
            self._check_finished_run(bulk, stdout, results, done_before, batch_size)
        result = RoundResult(
            number,
            bulk.number,
            batch_size,
            phase,
            fraction,
            delay,
            killed,
            len(bulk.keys),
            done_before,
            done_after,
        )
        self.results.append(result)
        self.out(result.describe())
        return result

    def _check_finished_run(
        self, bulk: BulkFile, stdout: bytes, results: Path, done_before: int, batch_size: int
    ) -> None:
        """A run that was not killed issued exactly the lines not done yet, the rest were replays."""
        summary = json.loads(stdout)
        lines = len(bulk.keys)
        assert (summary["issued"], summary["already_issued"], summary["failed"]) == (
            lines - done_before,
            done_before,
            0,
        ), summary
        self.estimates.learn(batch_size, summary["issued"], summary["seconds"] - self.estimates.overhead)
        by_key = self.identifiers(bulk)
        assert len(by_key) == lines, f"file {bulk.number}: {len(by_key)} licences for {lines} lines"
        written = [json.loads(x) for x in results.read_text(encoding="utf-8").splitlines()]
        assert [r["line"] for r in written] == list(range(1, lines + 1))
        # The results file names, line by line, the licence the vault holds for that line's key.
        assert [r["identifier"] for r in written] == [by_key[key] for key in bulk.keys]
        bulk.complete = True

    def finish(self) -> None:
        """Run the file in progress to the end, re-run a finished one, verify the audit log."""
        for bulk in self.files:
            if not bulk.complete:
                self._complete_run(bulk)
        if self.files:
            self._complete_run(self.files[0])  # a finished file again: every line "already issued"
        audit = subprocess.run(
            [YINXIN, "audit", "verify", "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert json.loads(audit.stdout)["valid"] is True
        self.check()
        for bulk in self.files:
            assert len(self.identifiers(bulk)) == len(bulk.keys), f"file {bulk.number} is not complete"

    def _complete_run(self, bulk: BulkFile) -> None:
        done_before = self.done(bulk)
        results = self.workdir / f"restart-{bulk.number}-{len(self.results)}.results.jsonl"
        log = results.with_suffix(".stderr")
        proc = self._spawn(bulk, 100, results, log)
        stdout, _ = proc.communicate(timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, log.read_text(errors="replace")[-4000:]
        self._check_finished_run(bulk, stdout, results, done_before, 100)
        self.out(
            f"restart of file {bulk.number} to the end: {len(bulk.keys) - done_before} issued, "
            f"{done_before} already issued"
        )

    # ---- invariants ---------------------------------------------------------------------------

    def identifiers(self, bulk: BulkFile) -> dict[str, str]:
        """Idempotency key → identifier, for this file's lines that have a licence."""
        wanted = set(bulk.keys)
        return {key: identifier for key, identifier in self._keyed() if key in wanted}

    def done(self, bulk: BulkFile) -> int:
        return len(self.identifiers(bulk))

    def _head(self) -> int:
        """The audit chain's head: it moves when the import commits a batch."""
        with self.vault.db.read() as s:
            return int(s.execute(select(AuditHeadRecord.seq).where(AuditHeadRecord.id == 1)).scalar_one())

    def _keyed(self) -> Iterator[tuple[str, str]]:
        with self.vault.db.read() as s:
            rows = s.execute(select(LicenceRecord.idempotency_key, LicenceRecord.identifier)).all()
        for key, identifier in rows:
            if key is not None:
                yield key, identifier

    def check(self) -> None:
        """Every invariant, over the whole database, in one snapshot."""
        began = time.monotonic()
        try:
            self._check()
        finally:
            self.check_seconds += time.monotonic() - began

    def _check(self) -> None:
        with self.vault.db.read() as s:
            if self.vault.db.dialect == "postgresql":
                # One snapshot for every query below (a commit the killed client sent may still land).
                s.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            licences = s.execute(
                select(
                    LicenceRecord.identifier,
                    LicenceRecord.type_code,
                    LicenceRecord.issuer_code,
                    LicenceRecord.serial_year,
                    LicenceRecord.serial_sequence,
                    LicenceRecord.idempotency_key,
                    LicenceRecord.kid,
                    LicenceRecord.token,
                    LicenceRecord.status_list,
                    LicenceRecord.status_index,
                )
            ).all()
            events = s.execute(
                select(AuditEventRecord.subject, AuditEventRecord.details).where(
                    AuditEventRecord.action == "licence.issue"
                )
            ).all()
            counters = {
                (r.type_code, r.issuer_code, r.year): r.last_sequence
                for r in s.execute(select(SerialCounterRecord)).scalars()
            }
            signature_counts = dict(
                s.execute(
                    select(KeyRecord.kid, KeyRecord.signature_count).where(
                        KeyRecord.purpose == KEY_PURPOSE_LICENCE
                    )
                ).all()
            )
        _check_rows(licences, events, counters, signature_counts, self._known_keys())
        report = self.vault.verify_audit()
        assert report.ok, f"audit chain: {report.problems}"

    def _known_keys(self) -> set[str]:
        return {key for bulk in self.files for key in bulk.keys}

    # ---- summary ------------------------------------------------------------------------------

    def summary(self) -> str:
        """Where the kills landed: by phase, and for kills that stopped it mid-way, how far it got."""
        killed = [r for r in self.results if r.killed]
        landed: Counter[str] = Counter()
        for r in killed:
            if r.done_after == r.done_before:
                landed[f"{r.phase}, nothing committed"] += 1
            elif r.done_after == r.lines:
                landed["after the last commit"] += 1
            else:
                quarter = min(int(4 * r.done_after / r.lines), 3)
                landed[f"mid-way, {25 * quarter}-{25 * quarter + 25} % of the file done"] += 1
        lines = sum(len(f.keys) for f in self.files)
        return (
            f"seed {self.seed}: {len(self.results)} rounds, {len(killed)} killed, "
            f"{len(self.results) - len(killed)} finished before the kill; {len(self.files)} files, "
            f"{lines} lines; checks took {self.check_seconds:.1f} s; kills landed: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(landed.items()))
        )


def _check_rows(
    licences: Any,
    events: Any,
    counters: dict[tuple[str, str, int], int],
    signature_counts: dict[str, int],
    known_keys: set[str],
) -> None:
    tokens = {row.identifier: row.token for row in licences}
    assert len(tokens) == len(licences)

    # Each licence has exactly one issue event; no issue event names a licence that is not there.
    issued = Counter(subject for subject, _ in events)
    twice = [subject for subject, n in issued.items() if n > 1]
    assert not twice, f"licences with more than one licence.issue event: {twice[:5]}"
    without_event = sorted(set(tokens) - set(issued))
    assert not without_event, f"{len(without_event)} licences without an audit event: {without_event[:5]}"
    phantom = sorted(set(issued) - set(tokens))
    assert not phantom, f"{len(phantom)} licence.issue events name no stored licence: {phantom[:5]}"
    for subject, details in events:
        digest = json.loads(details)["token_sha256"]
        assert digest == hashlib.sha256(tokens[subject].encode()).hexdigest(), subject

    # Serials: each used once per (type, issuer, year), no holes, the counter at the last one.
    groups: dict[tuple[str, str, int], list[int]] = {}
    for row in licences:
        parsed = LicenceIdentifier.parse(row.identifier)
        assert (parsed.type_code, parsed.issuer_code, parsed.year, parsed.sequence) == (
            row.type_code,
            row.issuer_code,
            row.serial_year,
            row.serial_sequence,
        ), row.identifier
        groups.setdefault((row.type_code, row.issuer_code, row.serial_year), []).append(row.serial_sequence)
    for group, sequences in groups.items():
        repeated = [seq for seq, n in Counter(sequences).items() if n > 1]
        assert not repeated, f"serials used twice in {group}: {repeated[:5]}"
        assert sorted(sequences) == list(range(1, len(sequences) + 1)), f"serials of {group} have holes"
        assert counters.get(group) == len(sequences), (
            f"the counter of {group} says {counters.get(group)}, {len(sequences)} licences hold serials"
        )
    assert all(groups.get(g) or n == 0 for g, n in counters.items()), counters

    # One licence per idempotency key, and each one from a line of our files.
    keys = Counter(row.idempotency_key for row in licences)
    assert all(n == 1 for n in keys.values()), "an idempotency key names two licences"
    strays = [key for key in keys if key not in known_keys]
    assert not strays, f"licences from no line of the bulk files: {strays[:3]}"

    # Status list slots are never shared; each key counted exactly the signatures it made.
    slots = Counter((row.status_list, row.status_index) for row in licences)
    assert all(n == 1 for n in slots.values()), "two licences share a status list slot"
    signed = Counter(row.kid for row in licences)
    for kid, count in signature_counts.items():
        assert count == signed.get(kid, 0), (
            f"key {kid} counted {count} signatures, signed {signed.get(kid, 0)}"
        )


def _wait_for(ready: Callable[[], bool], proc: subprocess.Popen[bytes], every: float = 0.003) -> float | None:
    """Poll until *ready*; the time it became so, or None if the process exited first."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        if ready():
            return time.monotonic()
        if proc.poll() is not None:
            return None
        time.sleep(every)
    raise AssertionError(f"issue-bulk neither got there nor exited within {RUN_TIMEOUT} s")


def _sleep_unless_exited(proc: subprocess.Popen[bytes], delay: float) -> None:
    end = time.monotonic() + delay
    while (left := end - time.monotonic()) > 0:
        if proc.poll() is not None:
            return
        time.sleep(min(left, 0.005))
