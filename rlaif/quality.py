"""Where the data-quality flags of ``rlaif.stages.flags`` meet the rows and the database.

- ``RowFlagger`` turns one chain's answer and revisions into ``row_flags`` rows as the chain completes
  (empty, truncated, refusal, unchanged, and for revisions meta and not_revised): no second pass, nothing held.
- ``flag_run`` adds the flags that need the whole run (length outliers, near-duplicates across prompts) once the
  run's rows are stored, reading its final answers in batches.
- ``flag_counts`` reads ``row_flags`` generically for ``rlaif stats``: any target and flag, the judge's pair
  flags included.

Flag rows are written with INSERT OR IGNORE like every other row, so a resumed run keeps the flags it already
has and adds those of its new rows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rlaif.stages import flags
from rlaif.store import utcnow

if TYPE_CHECKING:
    from rlaif.config import FlagSettings
    from rlaif.stages.critique_revise import Revisions
    from rlaif.stages.respond import Response
    from rlaif.store import Store

_BATCH = 2048  # final answers read at a time by the run pass
# The run's final answers, as sft_candidates defines them but from the tables themselves: the view also builds
# every row's messages and sorts all rounds for its window, which a 20,000-prompt run pays for in memory.
_FINAL_ANSWERS = """
SELECT 'revision' AS target, v.chain_id || ':' || v.round AS target_id, v.revision AS completion
FROM revisions v JOIN responses r USING (chain_id)
WHERE v.run_id = ? AND v.round = r.rounds AND v.revision IS NOT NULL
UNION ALL
SELECT 'response', chain_id, response FROM responses WHERE run_id = ? AND helpful AND response IS NOT NULL
ORDER BY target_id
"""


def revision_target_id(chain_id: str, round_number: int) -> str:
    """The ``row_flags.target_id`` of a revision row (storage/004_sft.sql builds the same in SQL)."""
    return f"{chain_id}:{round_number}"


class RowFlagger:
    """Per-row flags of one run, with its thresholds and refusal patterns."""

    def __init__(self, run_id: str, thresholds: "FlagSettings", patterns: re.Pattern[str],
                 meta_patterns: re.Pattern[str] | None = None):
        self.run_id, self.thresholds, self.patterns = run_id, thresholds, patterns
        # read at the run's start, so a bad pattern file stops it before any engine call
        self.meta_patterns = meta_patterns or flags.load_meta_patterns(thresholds.meta_patterns)

    def response(self, response: "Response") -> list[dict]:
        """Flags of the policy's answer (target 'response', id chain_id)."""
        c = response.completion
        found = flags.answer_flags(response.text, c.finish_reason if c else None, self.patterns)
        now = utcnow()
        return [f.row("response", response.chain_id, self.run_id, now) for f in found]

    def revisions(self, chain_id: str, revisions: "Revisions") -> list[dict]:
        """Flags of each round's revision (target 'revision', id 'chain_id:round')."""
        rows, now = [], utcnow()
        first = revisions.rounds[0].before if revisions.rounds else None
        for r in revisions.rounds:
            text = r.revised_text
            found = flags.answer_flags(text, r.revision.finish_reason if r.revision else None, self.patterns)
            critique = r.critique.text if r.critique is not None else None
            found += [flags.unchanged(r.before, text, self.thresholds.unchanged_similarity),
                      flags.meta(text, self.meta_patterns), flags.not_revised(text, critique, [first, r.before],
                                        self.thresholds.not_revised_similarity)]
            target = revision_target_id(chain_id, r.number)
            rows += [f.row("revision", target, self.run_id, now) for f in found if f is not None]
        return rows


def flag_run(store: "Store", run_id: str, thresholds: "FlagSettings") -> int:
    """Length-outlier and near-duplicate flags over the run's final answers; returns the flag rows new now."""
    ids: list[str] = []
    targets: list[str] = []
    lengths: list[int] = []
    signed: list[int] = []  # indexes (into ids) of the answers that have a signature
    signatures = []
    with store.connect() as con:
        cursor = con.execute(_FINAL_ANSWERS, [run_id, run_id])
        while batch := cursor.fetchmany(_BATCH):
            for target, target_id, text in batch:
                signature = flags.minhash(text)
                if signature is not None:
                    signed.append(len(ids))
                    signatures.append(signature)
                ids.append(target_id)
                targets.append(target)
                lengths.append(len(text))
    found = flags.length_outliers(lengths, thresholds.length_z, thresholds.length_min_rows)
    duplicates = flags.duplicate_flags([ids[i] for i in signed], signatures, thresholds.near_duplicate)
    now = utcnow()
    rows = [f.row(targets[i], ids[i], run_id, now) for i, f in found.items()]
    rows += [f.row(targets[signed[j]], ids[signed[j]], run_id, now) for j, f in duplicates.items()]
    return store.insert("row_flags", rows)


def flag_counts(store: "Store", run_id: str | None = None, *, read_only: bool = False) -> list[dict]:
    """Rows hit per (run, target, flag), every flag the table holds; one run's when ``run_id`` is given.

    ``read_only`` opens the file read-only, so ``rlaif stats`` works while a run is writing.
    """
    where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
    sql = (f"SELECT run_id, target, flag, count(*) AS rows FROM row_flags {where} "
           "GROUP BY run_id, target, flag ORDER BY run_id, target, flag")
    import duckdb

    from rlaif.errors import StoreError

    with store.connect(read_only=read_only) as con:
        try:
            cursor = con.execute(sql, params)
        except duckdb.CatalogException:
            raise StoreError(f"{store.path} has no row_flags table yet; any generating command migrates it "
                             "(e.g. rlaif generate sft)") from None
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values)) for values in cursor.fetchall()]
