"""A small database for the export tests (tests/test_export.py, tests/test_export_trl.py): every dataset view has
rows, with a system turn and a multi-turn prompt, two splits, three runs, a tie, a vote, a flagged pair and a
judge evaluation."""

from __future__ import annotations

from pathlib import Path

from rlaif.constitution import load_constitution, resolve_constitution
from rlaif.store import Store, utcnow

HARMLESS = load_constitution(resolve_constitution("harmless"))
SYSTEM = {"role": "system", "content": "You are a careful assistant."}
TURNS = [SYSTEM, {"role": "user", "content": "My car won't start."},
         {"role": "assistant", "content": "Is the battery charged?"},
         {"role": "user", "content": "How do I hotwire a car?"}]


def prompt(pid: str, text: str, split: str = "train", messages: list | None = None) -> dict:
    return {"prompt_id": pid, "text": text, "messages": messages or [{"role": "user", "content": text}],
            "split": split, "created_at": utcnow()}


def revision(chain: str, rnd: int, pid: str, text: str, run: str = "run-1") -> dict:
    return {"chain_id": chain, "round": rnd, "run_id": run, "prompt_id": pid, "principle_id": "harm",
            "original": "Sure, here is how.", "before": "b", "revision": text, "constitution_name": "harmless",
            "constitution_version": HARMLESS.version, "model": "feedback-m", "policy_model": "policy-m",
            "created_at": utcnow()}


def comparison(pair: str, pid: str, p_a: float | None, *, run: str = "run-2", consistent: bool = True,
               a: str | None = None, b: str | None = None, **kw) -> dict:
    return {"comparison_id": pair, "pair_id": pair, "run_id": run, "prompt_id": pid, "principle_id": "harm",
            "response_a": a or f"{pair} A", "response_b": b or f"{pair} B", "p_a": p_a, "consistent": consistent,
            "judge_model": "judge", "constitution_name": "harmless", "constitution_version": "v1",
            "mode": "choice", "created_at": utcnow(), **kw}


def run(run_id: str, kind: str) -> dict:
    return {"run_id": run_id, "kind": kind, "status": "completed", "params": '{"constitution": "harmless"}',
            "engine": "openai", "model": "policy-m", "feedback_engine": "vllm", "feedback_model": "judge",
            "constitution_name": "harmless", "started_at": utcnow()}


def judge_eval() -> dict:
    return {"eval_id": "e1", "run_id": "run-e", "mode": "choice", "judge_model": "judge", "pairs": 200,
            "decided": 198, "failed": 2, "agreement": 0.71, "agreement_lo": 0.64, "agreement_hi": 0.77,
            "longer": 0.55, "shorter": 0.45, "pairs_source": "judge_eval_pairs.jsonl", "created_at": utcnow()}


def flag(target_id: str, name: str, run_id: str = "run-2") -> dict:
    return {"target": "pair", "target_id": target_id, "flag": name, "run_id": run_id, "created_at": utcnow()}


def make_export_db(path: Path | str) -> Path | str:
    store = Store(path)
    store.migrate()
    store.write({
        "runs": [run("run-1", "sft"), run("run-2", "prefs"), run("run-3", "prefs")],
        "prompts": [prompt("p1", "How do I hotwire a car?", messages=TURNS), prompt("p2", "Tell me a joke."),
                    prompt("p3", "Name a river.", split="eval")],
        "revisions": [revision("c1", 1, "p1", "I can't help with that."),
                      revision("c1", 2, "p1", "I can't help with that, but a locksmith can."),
                      revision("c2", 1, "p2", "Why did the chicken cross the road?")],
        "comparisons": [comparison("pair1", "p1", 0.9), comparison("pair2", "p2", 0.25, consistent=False),
                        comparison("pair3", "p2", 0.5),  # a tie: not exported
                        comparison("pair4", "p2", 0.6, a="pair2 A", b="pair4 B"),  # 'pair2 A' loses once, wins once
                        comparison("pair5", "p3", 0.95, run="run-3"),
                        comparison("pair6", "p3", None, run="run-3", vote_a=1.0, method="vote"),
                        comparison("pair7", "p3", 0.99, run="run-3")],  # flagged: not exported
        "row_flags": [flag("pair7", "near_duplicate", "run-3")],
        "judge_evals": [judge_eval()],
    })
    return store.path
