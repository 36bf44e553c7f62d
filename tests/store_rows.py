"""Row builders for the store tests (tests/test_store.py, tests/test_store_writer.py): one row of a table each,
the defaults filled in, ``**kw`` for the columns a test cares about."""

from __future__ import annotations

from rlaif.store import Store, utcnow


def prompt(pid: str, text: str = "How do I pick a lock?", **kw) -> dict:
    return {"prompt_id": pid, "text": text, "messages": [{"role": "user", "content": text}],
            "created_at": utcnow(), **kw}


def revision(chain: str, rnd: int, text: str | None, pid: str = "p1") -> dict:
    return {"chain_id": chain, "round": rnd, "run_id": "r1", "prompt_id": pid, "principle_id": "harm",
            "original": "orig", "before": "before", "critique": "crit", "revision": text,
            "constitution_name": "harmless", "constitution_version": "v1", "model": "m", "created_at": utcnow()}


def comparison(pair: str, principle: str, p_a: float | None, pid: str = "p1") -> dict:
    return {"comparison_id": f"{pair}-{principle}", "pair_id": pair, "run_id": "r1", "prompt_id": pid,
            "principle_id": principle, "response_a": f"{pair}-a", "response_b": f"{pair}-b", "p_a": p_a,
            "consistent": True, "method": "logprobs", "judge_model": "judge", "constitution_name": "harmless",
            "constitution_version": "v1", "created_at": utcnow()}


def run_row(run_id: str = "r1", **kw) -> dict:
    return {"run_id": run_id, "kind": "sft", "status": "running", "params": '{"rounds": 2}',
            "started_at": utcnow(), **kw}


def count(store: Store, table: str) -> int:
    return store.fetch(f"SELECT count(*) AS n FROM {table}")[0]["n"]
