"""The DuckDB store on real files: the schema against its golden columns, idempotent writes, and the dataset views.

The Writer and file locking between real processes are in tests/test_store_writer.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from store_rows import comparison, count, prompt, revision, run_row

from rlaif.errors import StoreError
from rlaif.resources import data_dir
from rlaif.store import Store, utcnow

# Every table and view of a freshly migrated database, columns in order. A schema change must update this.
GOLDEN = {
    "bad_rows": ["run_id", "source", "row_number", "column_name", "reason", "created_at"],
    "attempts": ["attempt_id", "key", "run_id", "stage", "number", "status", "error", "latency_s", "started_at"],
    "best_of_n": [
        "selection_id", "run_id", "prompt_id", "n", "scored", "chosen_key", "chosen", "reward", "reward_mean",
        "reward_source", "candidate_keys", "policy_model", "seed", "created_at",
    ],
    "best_of_n_sft": [
        "prompt_id", "prompt", "completion", "messages", "original", "rounds", "chain_id", "run_id",
        "constitution_name", "constitution_version", "model", "split", "source", "n", "reward", "reward_mean",
        "reward_source", "chosen_key",
    ],
    "comparisons": [
        "comparison_id", "pair_id", "run_id", "prompt_id", "chain_id", "principle_id", "response_a",
        "response_b", "source_a", "source_b", "key_ab", "key_ba", "p_a_ab", "p_a_ba", "p_a", "consistent",
        "method", "judge_model", "constitution_name", "constitution_version", "created_at",
        # 005 (judge)
        "mode", "status", "order_gap", "vote_a", "score_a", "score_b", "rationale_ab", "rationale_ba", "raw_output",
        "judge_keys", "judge_engine", "judge_config", "policy_model", "response_key_a", "response_key_b",
    ],
    "generations": [
        "key", "run_id", "kind", "stage", "prompt_id", "messages", "prompt_text", "params", "engine", "model",
        "output", "choice_logprobs", "choice_method", "finish_reason", "prompt_tokens", "completion_tokens",
        "latency_s", "constitution_version", "created_at",
        "continuation", "token_logprobs",  # 005 (judge)
    ],
    "iterate_loops": [
        "loop_id", "base_model", "iterations", "config", "out_dir", "status", "started_at", "finished_at", "error",
    ],
    "iteration_steps": [
        "loop_id", "iteration", "step", "status", "output", "started_at", "finished_at", "error",
    ],
    "iterations": [
        "loop_id", "iteration", "policy_before", "policy_after", "trainer", "generate_run_id", "train_run_id",
        "win_rate_vs_previous", "win_rate_vs_base", "eval_previous_id", "eval_base_id", "status", "started_at",
        "finished_at",
    ],
    "overopt_records": [
        "run_id", "step", "prompts", "kl", "mean_length", "length_drift", "proxy_score", "judge_score",
        "proxy_source", "judge_model", "created_at", "judge_mode",
    ],
    "overopt_warnings": [
        "run_id", "step", "kind", "since_step", "proxy_delta", "judge_delta", "message", "created_at",
    ],
    "policy_comparison": [
        "method", "policy", "base", "prompts", "win_rate", "win_rate_low", "win_rate_high", "lc_win_rate",
        "judge_model", "eval_id", "train_run_id", "created_at",
    ],
    "preference_dataset": [
        "prompt_id", "prompt", "chosen", "rejected", "p_chosen", "margin", "consistent", "principles", "method",
        "judge_model", "constitution_name", "constitution_version", "pair_id", "chain_id", "run_id", "split",
        # 005 (judge)
        "prompt_messages", "chosen_messages", "rejected_messages", "consistency", "order_gap", "mode",
        "judge_engine", "policy_model", "source_chosen", "source_rejected", "n_principles", "judgement_id",
        # 014 (exports)
        "confidence", "vote_chosen",
    ],
    # 005 (judge)
    "candidates": [
        "candidate_id", "run_id", "prompt_id", "sample", "response_key", "response", "finish_reason", "model",
        "config_hash", "created_at",
    ],
    "canary_results": [
        "canary_result_id", "run_id", "seq", "canary_id", "pair_id", "principle_id", "mode", "method", "status",
        "p_correct", "vote_correct", "correct", "consistent", "order_gap", "raw_output", "judge_keys",
        "judge_engine", "judge_model", "constitution_version", "created_at",
    ],
    "judge_eval_pairs": [
        "run_id", "mode", "row", "pair_id", "label", "p_a", "p_first", "p_second", "vote_a", "method", "status",
        "consistent", "correct", "len_a", "len_b", "raw_output", "judge_keys", "created_at",
        "kind", "split", "overlap_a", "overlap_b",
    ],
    "judge_evals": [
        "eval_id", "run_id", "mode", "pairs_source", "judge_engine", "judge_model", "constitution_name",
        "constitution_version", "principles", "judge_config", "pairs", "decided", "failed",
        *(f"{m}{s}" for m in ("agreement", "agreement_first", "agreement_second", "consistency", "first_slot_rate",
                              "brier", "ece", "longer", "shorter") for s in ("", "_lo", "_hi")),
        "when_label_longer", "when_label_longer_lo", "when_label_longer_hi", "pairs_label_longer",
        "when_label_shorter", "when_label_shorter_lo", "when_label_shorter_hi", "pairs_label_shorter",
        "seconds", "created_at",
        *(f"{m}{s}" for m in ("overlap", "slot_a") for s in ("", "_lo", "_hi")),
        "split", "best_baseline", "signal", "kinds",
    ],
    "preference_candidates": [
        "judgement_id", "pair_id", "prompt_id", "prompt", "prompt_messages", "response_a", "response_b", "source_a",
        "source_b", "mode", "method", "judge_model", "judge_engine", "policy_model", "constitution_name",
        "constitution_version", "p_a", "vote_a", "decision", "consistent", "consistency", "order_gap", "score_a",
        "score_b", "principles", "parse_failures", "chain_id", "run_id", "split", "flags", "flagged",
    ],
    "preference_judgements": [
        "judgement_id", "pair_id", "prompt_id", "chain_id", "response_a", "response_b", "source_a", "source_b",
        "mode", "method", "judge_model", "judge_engine", "policy_model", "constitution_name", "constitution_version",
        "p_a", "vote_a", "decision", "consistent", "consistency", "order_gap", "score_a", "score_b", "principles",
        "parse_failures", "run_id",
    ],
    "prompts": ["prompt_id", "text", "messages", "source", "split", "created_at"],
    "revisions": [
        "chain_id", "round", "run_id", "prompt_id", "principle_id", "original", "before", "critique", "revision",
        "response_key", "critique_key", "revision_key", "constitution_name", "constitution_version", "model",
        "created_at", "policy_model",
    ],
    "responses": [
        "chain_id", "run_id", "prompt_id", "response_key", "response", "helpful", "rounds", "context",
        "finish_reason", "model", "config_hash", "constitution_name", "constitution_version", "created_at",
    ],
    "reward_scores": ["reward_model", "key", "prompt_id", "stage", "reward", "reward_raw", "model_path", "created_at"],
    "rl_rollouts": [
        "key", "run_id", "step", "prompt_id", "sample", "response_tokens", "ended", "score", "penalised_score", "kl",
        "advantage", "created_at",
    ],
    "rollout_rewards": ["key", "source", "value", "weight", "detail", "run_id", "created_at"],
    "row_flags": ["target", "target_id", "flag", "value", "threshold", "detail", "run_id", "created_at"],
    "runs": [
        "run_id", "kind", "status", "params", "constitution_name", "constitution_version", "engine", "model",
        "seed", "started_at", "finished_at", "prefect_flow_run_id", "error", "config_hash", "source",
        "feedback_engine", "feedback_model",
    ],
    "schema_migrations": ["version", "name", "applied_at"],
    "sft_candidates": [
        "prompt_id", "prompt", "completion", "messages", "original", "round", "final", "helpful", "flags",
        "principle_id", "critique", "before", "chain_id", "run_id", "constitution_name", "constitution_version",
        "model", "policy_model", "target", "target_id", "split",
    ],
    "sft_dataset": [
        "prompt_id", "prompt", "completion", "messages", "original", "rounds", "chain_id", "run_id",
        "constitution_name", "constitution_version", "model", "split", "policy_model", "helpful",
    ],
    "sft_rounds": [
        "prompt_id", "prompt", "completion", "messages", "original", "round", "final", "principle_id", "critique",
        "before", "chain_id", "run_id", "constitution_name", "constitution_version", "model", "policy_model",
        "split",
    ],
    "skipped_prompts": [
        "run_id", "prompt_id", "stage", "round", "reason", "tokens", "context_length", "created_at",
    ],
    "train_checkpoints": ["run_id", "kind", "step", "path", "bytes", "pruned", "created_at"],
    "train_metrics": ["run_id", "phase", "step", "name", "value", "created_at"],
    "train_runs": [
        "run_id", "kind", "status", "config", "base_model", "dataset", "data_version", "data_rows", "train_rows",
        "eval_rows", "out_dir", "world_size", "device", "precision", "total_steps", "steps_done", "resumes",
        "final_path", "started_at", "finished_at", "prefect_flow_run_id", "error",
    ],
    "winrate_evals": [
        "eval_id", "run_id", "policy", "base", "judge_model", "constitution_version", "prompts_source", "split",
        "prompts", "win_rate", "win_rate_low", "win_rate_high", "lc_win_rate", "lc_win_rate_low", "lc_win_rate_high",
        "glm_intercept", "glm_length_coef", "length_scale", "wins", "ties", "losses", "mean_len_policy",
        "mean_len_base", "seed", "params", "created_at", "judge_engine", "judge_mode", "judge_is_base",
        "judge_is_labeller", "judge_warning",
    ],
    "winrate_judgements": [
        "eval_id", "prompt_id", "principle_id", "policy_output", "base_output", "policy_key", "base_key",
        "p_policy_ab", "p_policy_ba", "p_policy", "consistent", "len_policy", "len_base", "created_at",
    ],
}


# -- schema ---------------------------------------------------------------------------------------------------

def test_migrating_an_empty_database_gives_the_golden_schema(store: Store) -> None:
    rows = store.fetch(
        "SELECT table_name, column_name FROM information_schema.columns ORDER BY table_name, ordinal_position"
    )
    found: dict[str, list[str]] = {}
    for r in rows:
        found.setdefault(r["table_name"], []).append(r["column_name"])
    assert found == GOLDEN


def test_migrate_twice_applies_nothing_the_second_time(tmp_path: Path) -> None:
    shipped = sorted(p.stem for p in data_dir("storage").glob("[0-9][0-9][0-9]_*.sql"))
    assert shipped[:4] == ["001_initial", "002_dataset_views", "003_row_flags", "004_sft"]
    s = Store(tmp_path / "x.duckdb")
    assert s.migrate() == shipped
    assert s.migrate() == []
    recorded = s.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    assert recorded == [{"version": int(name[:3]), "name": name} for name in shipped]


def test_a_database_from_a_newer_rlaif_is_refused(store: Store) -> None:
    with store.connect() as con:
        con.execute("INSERT INTO schema_migrations VALUES (999, '999_future', now()::TIMESTAMP)")
    with pytest.raises(StoreError, match="migration 999"):
        store.migrate()


# -- writes ---------------------------------------------------------------------------------------------------

def test_insert_is_idempotent_and_counts_new_rows(store: Store) -> None:
    rows = [prompt("p1"), prompt("p2", messages=[], source=None)]  # empty list and all-None column
    assert store.insert("prompts", rows) == 2
    assert store.insert("prompts", rows) == 0
    assert store.insert("prompts", [prompt("p2"), prompt("p3")]) == 1
    assert count(store, "prompts") == 3
    stored = store.fetch("SELECT messages FROM prompts WHERE prompt_id = ?", ["p1"])[0]["messages"]
    assert stored == [{"role": "user", "content": "How do I pick a lock?"}]


def test_write_stores_several_tables_and_is_idempotent(store: Store) -> None:
    batch = {"prompts": [prompt("p1")], "revisions": [revision("c1", 1, "r1"), revision("c1", 2, "r2")]}
    assert store.write(batch) == {"prompts": 1, "revisions": 2}
    assert store.write(batch) == {"prompts": 0, "revisions": 0}
    assert (count(store, "prompts"), count(store, "revisions")) == (1, 2)


def test_write_is_all_or_nothing(store: Store) -> None:
    bad = revision("c1", 1, "r1") | {"original": None}  # NOT NULL column
    with pytest.raises(StoreError, match="revisions"):
        store.write({"prompts": [prompt("p1")], "revisions": [bad]})
    assert count(store, "prompts") == 0


def test_unknown_table_column_or_type_is_one_clear_error(store: Store) -> None:
    with pytest.raises(StoreError, match="no table 'promts'"):
        store.insert("promts", [prompt("p1")])
    with pytest.raises(StoreError, match="no column 'txt'"):
        store.insert("prompts", [prompt("p1") | {"txt": "x"}])
    with pytest.raises(StoreError, match=r"runs\.params"):
        store.insert("runs", [run_row(params={"rounds": 2})])  # JSON columns take serialised strings


def test_upsert_run_inserts_then_updates_status(store: Store) -> None:
    store.upsert_run(run_row(prefect_flow_run_id="flow-1"))
    done = utcnow()
    store.upsert_run(run_row(status="failed", error="boom", finished_at=done))  # no flow id: the stored one stays
    (row,) = store.fetch("SELECT * FROM runs")
    assert (row["status"], row["error"], row["finished_at"], row["prefect_flow_run_id"]) == (
        "failed", "boom", done, "flow-1")
    assert row["params"] == '{"rounds": 2}'


def test_upsert_run_takes_a_partial_row_and_aware_utc_times(store: Store) -> None:
    store.upsert_run(run_row())
    finished = datetime(2026, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    store.upsert_run({"run_id": "r1", "status": "completed", "finished_at": finished, "error": None})
    (row,) = store.fetch("SELECT kind, status, finished_at, params FROM runs")
    assert row == {"kind": "sft", "status": "completed", "finished_at": datetime(2026, 5, 1, 10, 30),
                   "params": '{"rounds": 2}'}
    with pytest.raises(StoreError, match="cannot record run 'r2'.*NOT NULL"):
        store.upsert_run({"run_id": "r2", "status": "completed"})  # a new run needs its whole row


def test_existing_finds_stored_keys_among_100k(store: Store) -> None:
    store.insert("prompts", [prompt(f"p{i}") for i in range(0, 2000, 2)])
    found = store.existing("prompts", "prompt_id", (f"p{i}" for i in range(100_000)))  # how fast: bench/, not here
    assert found == {f"p{i}" for i in range(0, 2000, 2)}
    assert store.existing("prompts", "prompt_id", []) == set()


def test_read_only_open_of_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    missing = Store(tmp_path / "none.duckdb")
    with pytest.raises(StoreError, match="no database at .*run `rlaif demo` or a flow first"), missing.connect(
        read_only=True
    ):
        pass


# -- the dataset views ----------------------------------------------------------------------------------------

def test_sft_view_takes_the_last_non_empty_revision_of_each_chain(store: Store) -> None:
    store.write({
        "prompts": [prompt("p1", split="train"), prompt("p2", text="Hi")],
        "revisions": [revision("c1", 1, "first"), revision("c1", 2, "second"),
                      revision("c2", 1, "kept", pid="p2"), revision("c2", 2, None, pid="p2"),
                      revision("c2", 3, "  ", pid="p2")],
    })
    rows = {r["chain_id"]: r for r in store.fetch("SELECT * FROM sft_dataset")}
    assert set(rows) == {"c1", "c2"}
    assert (rows["c1"]["completion"], rows["c1"]["rounds"], rows["c1"]["split"]) == ("second", 2, "train")
    assert rows["c1"]["messages"] == [{"role": "user", "content": "How do I pick a lock?"},
                                      {"role": "assistant", "content": "second"}]
    assert (rows["c2"]["prompt"], rows["c2"]["completion"], rows["c2"]["rounds"]) == ("Hi", "kept", 1)


def test_preference_view_averages_principles_and_drops_ties(store: Store) -> None:
    store.write({
        "prompts": [prompt("p1")],
        "comparisons": [
            comparison("a_wins", "harm", 0.8), comparison("a_wins", "honest", 0.6),  # mean 0.7
            comparison("b_wins", "harm", 0.2),
            comparison("tie", "harm", 0.5),
            comparison("tie_on_average", "harm", 0.25), comparison("tie_on_average", "honest", 0.75),
            comparison("unjudged", "harm", None),
        ],
    })
    rows = {r["pair_id"]: r for r in store.fetch("SELECT * FROM preference_dataset")}
    assert set(rows) == {"a_wins", "b_wins"}
    a, b = rows["a_wins"], rows["b_wins"]
    assert (a["chosen"], a["rejected"], a["principles"]) == ("a_wins-a", "a_wins-b", ["harm", "honest"])
    assert (a["p_chosen"], a["margin"]) == (pytest.approx(0.7), pytest.approx(0.4))
    assert (b["chosen"], b["rejected"]) == ("b_wins-b", "b_wins-a")
    assert (b["p_chosen"], b["margin"]) == (pytest.approx(0.8), pytest.approx(0.6))
