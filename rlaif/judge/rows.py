"""The judge's output rows: ``comparisons`` (one per principle verdict) and ``canary_results``.

Rows are keyed by content hashes, so writing them twice stores them once (``INSERT OR IGNORE``), and a verdict
that failed for good is never a row: the next run retries it. Everything is in the pair's canonical order.
"""

from __future__ import annotations

import json

from rlaif.constitution import Constitution
from rlaif.engines.base import content_hash
from rlaif.judge.verdict import Judgement, Verdict


def comparison_id(pair_id: str, verdict: Verdict, judge_model: str, constitution_version: str,
                  fingerprint: str) -> str:
    """One row per (pair, principle, judge model, constitution version, mode and its options)."""
    return content_hash("comparison", pair_id, verdict.principle_id, judge_model, constitution_version,
                        verdict.mode, fingerprint)


def verdict_columns(verdict: Verdict) -> dict:
    """The columns every verdict row shares (comparisons and canary_results)."""
    return {
        "principle_id": verdict.principle_id, "mode": verdict.mode, "method": verdict.method,
        "status": verdict.status, "consistent": verdict.consistent, "order_gap": verdict.order_gap,
        "raw_output": verdict.raw, "judge_keys": json.dumps(verdict.keys, sort_keys=True),
    }


def comparison_rows(judgement: Judgement, *, run_id: str, constitution: Constitution, judge_engine: str,
                    judge_model: str) -> list[dict]:
    """Input: a judgement. Output: its ``comparisons`` rows (failed verdicts left out, to be retried)."""
    from rlaif.store import utcnow  # imports duckdb; not needed to build prompts

    pair, config = judgement.pair, judgement.config
    fingerprint = config.fingerprint()
    rows = []
    for v in judgement.verdicts:
        if v.status == "failed":
            continue
        rows.append({
            "comparison_id": comparison_id(pair.pair_id, v, judge_model, constitution.version, fingerprint),
            "pair_id": pair.pair_id, "run_id": run_id, "prompt_id": pair.prompt_id, "chain_id": pair.chain_id,
            "response_a": pair.a.text, "response_b": pair.b.text, "source_a": pair.a.source or None,
            "source_b": pair.b.source or None, "key_ab": v.keys.get("ab"), "key_ba": v.keys.get("ba"),
            "p_a_ab": v.p_a_ab, "p_a_ba": v.p_a_ba, "p_a": v.p_a, "vote_a": v.vote_a, "score_a": v.score_a,
            "score_b": v.score_b, "rationale_ab": v.rationale_ab, "rationale_ba": v.rationale_ba,
            "judge_model": judge_model, "judge_engine": judge_engine, "judge_config": config.model_dump_json(),
            "policy_model": pair.policy_model, "response_key_a": pair.a.key, "response_key_b": pair.b.key,
            "constitution_name": constitution.name, "constitution_version": constitution.version,
            "created_at": utcnow(), **verdict_columns(v),
        })
    return rows
