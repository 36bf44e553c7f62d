"""Precision and recall of the revision-fidelity flags (``meta``, ``not_revised``) on hand-labelled revisions.

The labelled set (``tests/data/revision_labels.jsonl``) holds revisions the embedded model wrote in real runs, each
with its critique, the text it revised and the first answer, labelled by reading it:
- ``not_revised``: the revision restates the critique (it is commentary about the answer, copied from the critique);
- ``meta``: other commentary about an answer instead of an answer ("This response is better because ...",
  "Here is a revised response" with nothing after it);
- ``fine``: an answer to the person, good or bad.

``meta`` is scored against "not an answer" (label meta or not_revised: both talk about the answer); ``not_revised``
against its own label. Beside each flag, the trivial baseline of flagging every row (precision = the share of
positives, recall 1). Run:

    python bench/revision_flags.py [--labels tests/data/revision_labels.jsonl] [--json]

``--db DEMO.duckdb`` instead counts, over a demo run's final revisions and first answers, the rows each flag hits
with the shipped functions (so a run made before the flags existed is counted the same way), and the truncated
answers: the before/after figures of docs/benchmarks.md, "Revision-fidelity flags" and "Helpful answers finish".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlaif.stages import flags  # noqa: E402

TARGETS = {"meta": ("meta", "not_revised"), "not_revised": ("not_revised",)}


def predictions(rows: list[dict]) -> dict[str, list[bool]]:
    """Each flag's verdict on each labelled row, through the shipped functions and patterns."""
    patterns = flags.load_meta_patterns()
    return {
        "meta": [flags.meta(r["revision"], patterns) is not None for r in rows],
        "not_revised": [flags.not_revised(r["revision"], r["critique"], [r["original"], r["before"]]) is not None
                        for r in rows],
    }


def score(predicted: list[bool], actual: list[bool]) -> dict[str, float | int]:
    tp = sum(p and a for p, a in zip(predicted, actual))
    fp = sum(p and not a for p, a in zip(predicted, actual))
    fn = sum(a and not p for p, a in zip(predicted, actual))
    return {"tp": tp, "fp": fp, "fn": fn, "positives": sum(actual), "rows": len(actual),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "baseline_precision": sum(actual) / len(actual) if actual else float("nan")}


REVISIONS = """
SELECT v.revision, v.critique, v.before, v.original FROM revisions v JOIN responses r USING (chain_id)
WHERE v.round = r.rounds AND v.revision IS NOT NULL ORDER BY v.chain_id
"""
FINISH = """
SELECT g.stage, count(*) AS calls, count(*) FILTER (WHERE g.finish_reason = 'length') AS truncated
FROM generations g WHERE g.stage IN ('respond', 'critique', 'revise') GROUP BY g.stage ORDER BY g.stage
"""


def count_run(db: Path) -> dict:
    """Flags over one demo database's final revisions, and its truncated calls per stage."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        names = ("revision", "critique", "before", "original")
        rows = [dict(zip(names, r)) for r in con.execute(REVISIONS).fetchall()]
        finish = {stage: {"calls": n, "truncated": cut} for stage, n, cut in con.execute(FINISH).fetchall()}
        helpful = con.execute("SELECT count(*), count(*) FILTER (WHERE g.finish_reason = 'length') FROM responses r "
                              "JOIN generations g ON g.key = r.response_key WHERE r.helpful").fetchone()
    finally:
        con.close()
    found = predictions(rows)
    return {"db": str(db), "revisions": len(rows), "meta": sum(found["meta"]),
            "not_revised": sum(found["not_revised"]), "calls": finish,
            "helpful_answers": helpful[0], "helpful_truncated": helpful[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=ROOT / "tests" / "data" / "revision_labels.jsonl")
    parser.add_argument("--db", type=Path, action="append", help="count flags in a demo database (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.db:
        print(json.dumps([count_run(db) for db in args.db], indent=2))
        return
    rows = [json.loads(line) for line in args.labels.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{args.labels}: no labelled rows")
    found = predictions(rows)
    results = {name: score(found[name], [r["label"] in labels for r in rows]) for name, labels in TARGETS.items()}
    counts = {label: sum(r["label"] == label for r in rows) for label in ("meta", "not_revised", "fine")}
    if args.json:
        print(json.dumps({"rows": len(rows), "labels": counts, "flags": results}, indent=2))
        return
    print(f"{len(rows)} labelled revisions: {counts}")
    for name, r in results.items():
        print(f"{name:12} precision {r['precision']:.3f} ({r['tp']}/{r['tp'] + r['fp']}), recall {r['recall']:.3f} "
              f"({r['tp']}/{r['positives']}); flag-everything baseline precision {r['baseline_precision']:.3f}")


if __name__ == "__main__":
    main()
