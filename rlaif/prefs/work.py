"""What a preference run judges, as a stream of jobs: one prompt and either its given pairs or none yet.

Three sources, one shape, so the pipeline schedules them alike:

- ``prompt_jobs``: a prompt source (``rlaif.sources.read_prompts``); the pipeline samples each prompt's
  candidates from the policy and pairs them;
- ``run_jobs``: the (original, final revision) pairs of an SL-CAI run (``revisions`` joined with ``prompts``),
  read from the database a page of prompts at a time;
- ``pair_jobs``: a pair file (``rlaif.judge.pairs_file.read_pair_file``), one job per pair.

Every source is read as a stream, and ``count_work`` validates a whole source before a run writes anything (a
bad pair-file row stops it with ``FILE:ROW: column 'x': expected ...``) and gives the progress bar its total.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlaif.errors import ConfigError
from rlaif.judge.pairing import Pair, revision_pairs
from rlaif.prompts import PromptRow, make_prompt

if TYPE_CHECKING:
    from rlaif.options import PrefsOptions
    from rlaif.store import Store

PAGE = 512  # prompts of an SL-CAI run read per query
SL_CAI_KINDS = ("sft", "demo")


@dataclass(frozen=True)
class Job:
    """One prompt's work: sample and pair its candidates (``pairs`` None), or judge the pairs given."""

    prompt: PromptRow
    pairs: tuple[Pair, ...] | None = None


def source_identity(options: "PrefsOptions") -> str:
    """What names a run's source across invocations (``rlaif.runs.source_identity``, marked by kind)."""
    from rlaif.runs import source_identity as identity

    if options.from_run is not None:
        return f"run:{options.from_run}"
    if options.pairs is not None:
        return f"pairs:{identity(options.pairs)}"
    return identity(options.prompts or "")


def _source_args(options: "PrefsOptions") -> dict:
    return {"prompt_column": options.prompt_column, "skip_bad_rows": options.skip_bad_rows}


def count_work(options: "PrefsOptions", db: Any) -> tuple[int, int]:
    """(jobs, bad rows) of a run's source, validating all of it first; raises one ConfigError line."""
    if options.pairs is not None:
        return sum(1 for _ in _labelled(options.pairs, db, options.limit)), 0
    if options.from_run is not None:
        return min(_chains(run_store(db), options.from_run), options.limit or 2**63), 0
    from rlaif.sources import check_prompts

    check = check_prompts(options.prompts, db=db, limit=options.limit, **_source_args(options))
    return check.count, check.bad_total


def run_store(db: Any) -> "Store":
    """The database an SL-CAI run's pairs are read from: it must exist already."""
    from pathlib import Path

    from rlaif.store import Store

    if not Path(db).exists():
        raise ConfigError(f"--from-run: there is no database at {db}, so no SL-CAI run to take pairs from")
    store = Store(db)
    store.migrate()
    return store


def _chains(store: "Store", run_id: str) -> int:
    """How many chains with revisions an SL-CAI run has; ConfigError when it is no such run."""
    found = store.fetch("SELECT kind FROM runs WHERE run_id = ?", [run_id])
    if not found:
        raise ConfigError(f"--from-run {run_id}: no such run in the database (see: rlaif sql \"SELECT run_id, "
                          "kind, status FROM runs\")")
    if found[0]["kind"] not in SL_CAI_KINDS:
        raise ConfigError(f"--from-run {run_id}: a {found[0]['kind']!r} run has no revisions; expected a run of "
                          f"kind {' or '.join(SL_CAI_KINDS)}")
    (row,) = store.fetch("SELECT count(DISTINCT prompt_id) AS n FROM revisions WHERE run_id = ?", [run_id])
    return int(row["n"])


def prompt_jobs(options: "PrefsOptions", db: Any) -> Iterator[Any]:
    """Jobs (and, with ``--skip-bad-rows``, BadRow items) of a prompt source, in source order."""
    from rlaif.sources import read_prompts

    for item in read_prompts(options.prompts, db=db, **_source_args(options)):
        yield Job(item) if isinstance(item, PromptRow) else item


def pair_jobs(options: "PrefsOptions", db: Any) -> Iterator[Job]:
    """One job per pair of a pair file, its prompt row built from the pair's conversation."""
    for labelled in _labelled(options.pairs, db, None):
        pair = labelled.pair
        yield Job(make_prompt(list(pair.messages), source=labelled.source), (pair,))


def _labelled(spec: str | None, db: Any, limit: int | None) -> Iterator[Any]:
    from rlaif.judge.pairs_file import read_pair_file

    return read_pair_file(spec or "", db=db, limit=limit)


_REVISIONS = """
SELECT v.chain_id, v.round, v.prompt_id, p.messages, v.original, v.revision, v.response_key, v.revision_key,
       coalesce(v.policy_model, v.model) AS model, p.source
FROM revisions v JOIN prompts p USING (prompt_id)
WHERE v.run_id = ? AND v.prompt_id IN (SELECT unnest(?::VARCHAR[]))
ORDER BY v.prompt_id, v.chain_id, v.round
"""


def run_jobs(store: "Store", run_id: str) -> Iterator[Job]:
    """The (original, final revision) pairs of an SL-CAI run, one job per prompt, a page of prompts per query.

    A chain with no revision, or whose final revision is its original, gives a job with no pairs (nothing to
    judge); the prompt still counts, so the run's total matches ``count_work``.
    """
    last = ""
    while True:
        ids = [r["prompt_id"] for r in store.fetch(
            "SELECT DISTINCT prompt_id FROM revisions WHERE run_id = ? AND prompt_id > ? ORDER BY prompt_id "
            f"LIMIT {PAGE}", [run_id, last])]
        if not ids:
            return
        rows = store.fetch(_REVISIONS, [run_id, ids])
        by_prompt: dict[str, list[dict]] = {}
        for row in rows:
            by_prompt.setdefault(row["prompt_id"], []).append(row)
        for pid in ids:
            chain = by_prompt.get(pid, [])
            if not chain:
                continue
            prompt = PromptRow(pid, tuple(dict(m) for m in chain[0]["messages"]), chain[0]["source"] or "")
            yield Job(prompt, tuple(revision_pairs(chain)))
        last = ids[-1]
