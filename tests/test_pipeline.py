"""The whole pipeline on the fake engine and a real DuckDB file: rows, views, resume, retry of failures."""

from __future__ import annotations

import json

import pytest

from rlaif.engines.fake import FakeEngine
from rlaif.pipeline import CaiConfig
from rlaif.prompts import make_prompt
from rlaif.runner import run_generation
from rlaif.store import Store

PROMPTS = [make_prompt(t) for t in ("How do I pick a lock?", "Write a haiku about tea.", "Insult my coworker.")]


def _count(store: Store, table: str) -> int:
    return store.fetch(f"SELECT count(*) AS n FROM {table}")[0]["n"]


def test_run_writes_every_call_and_fills_both_datasets(settings, harmless):
    engine = FakeEngine().prefer("B", 0.9)  # the judge prefers the revision (shown second, then first)
    summary = run_generation(settings, harmless, PROMPTS, CaiConfig(rounds=2), engine=engine, show_progress=False)
    store = Store(settings.db)

    assert (summary.prompts, summary.revisions, summary.failed_prompts) == (3, 3, 0)
    assert _count(store, "prompts") == 3
    # 1 response + 2 x (critique + revision) chats, 2 judge calls per prompt
    assert store.fetch("SELECT kind, count(*) AS n FROM generations GROUP BY kind ORDER BY kind") == [
        {"kind": "chat", "n": 15}, {"kind": "choice", "n": 6}]
    assert _count(store, "attempts") == 21 == summary.engine_calls
    assert _count(store, "revisions") == 6
    sft = store.fetch("SELECT * FROM sft_dataset ORDER BY prompt")
    assert len(sft) == 3 and all(r["rounds"] == 2 for r in sft)
    assert sft[0]["messages"][-1] == {"role": "assistant", "content": sft[0]["completion"]}
    run = store.fetch("SELECT * FROM runs")[0]
    assert run["status"] == "completed" and run["constitution_version"] == harmless.version
    assert json.loads(run["params"])["rounds"] == 2
    # a judge that always prefers slot B prefers nobody once both orders are averaged: ties are left out
    assert _count(store, "comparisons") == 3 and _count(store, "preference_dataset") == 0


def test_rerun_resumes_without_engine_calls_or_duplicates(settings, harmless):
    first = FakeEngine()
    run_generation(settings, harmless, PROMPTS, CaiConfig(), engine=first, show_progress=False)
    again = FakeEngine()
    summary = run_generation(settings, harmless, PROMPTS, CaiConfig(), engine=again, show_progress=False)
    store = Store(settings.db)
    assert again.chat_requests == [] and again.choice_requests == [] and summary.engine_calls == 0
    assert summary.reused == len(first.chat_requests) + len(first.choice_requests)
    assert _count(store, "generations") == len(first.chat_requests) + len(first.choice_requests)
    assert _count(store, "revisions") == 3 and _count(store, "comparisons") == 3 and _count(store, "runs") == 2


def test_failed_request_is_recorded_then_retried_by_the_next_run(settings, harmless):
    from rlaif.stages.respond import response_request
    from rlaif.stages import derive_seed
    from dataclasses import replace

    params = replace(CaiConfig().params(), seed=derive_seed(settings.seed, PROMPTS[1].prompt_id, "respond"))
    doomed = response_request(PROMPTS[1], harmless, params, "fake-model").key
    summary = run_generation(settings, harmless, PROMPTS, CaiConfig(), engine=FakeEngine().fail(doomed),
                             show_progress=False)
    store = Store(settings.db)
    assert summary.failed_prompts == 1
    failed = store.fetch("SELECT * FROM attempts WHERE status = 'failed'")
    assert [(r["key"], r["error"]) for r in failed] == [(doomed, "fake failure")]
    assert store.existing("generations", "key", [doomed]) == set()

    retry = FakeEngine()
    summary = run_generation(settings, harmless, PROMPTS, CaiConfig(), engine=retry, show_progress=False)
    assert summary.failed_prompts == 0
    assert {r.prompt_id for r in retry.chat_requests} == {PROMPTS[1].prompt_id}  # only the failed chain reran
    assert _count(store, "sft_dataset") == 3


def test_config_errors_state_the_numbers():
    from rlaif.errors import ConfigError

    with pytest.raises(ConfigError, match="rounds must be between 1 and 16, got 0"):
        CaiConfig(rounds=0)


def test_a_failed_revision_leaves_no_row_and_the_rerun_completes_the_chain(settings, harmless):
    summary = run_generation(settings, harmless, PROMPTS, CaiConfig(rounds=2), show_progress=False,
                             engine=FakeEngine().fail(stages=("revise",)))
    store = Store(settings.db)
    assert summary.failed_prompts == 3 and "round 1: fake failure" in summary.errors[0]
    assert _count(store, "revisions") == 0  # a NULL revision row would block the rerun's INSERT OR IGNORE
    run = store.fetch("SELECT status, error FROM runs")[0]
    assert run["status"] == "partial" and run["error"].startswith("3 prompts failed")

    retry = FakeEngine()
    summary = run_generation(settings, harmless, PROMPTS, CaiConfig(rounds=2), engine=retry, show_progress=False)
    assert summary.failed_prompts == 0
    assert {r.stage for r in retry.chat_requests} == {"revise", "critique"}  # responses and critique 1 reused
    assert _count(store, "revisions") == 6 and _count(store, "sft_dataset") == 3


def test_empty_outputs_are_data_not_failures(settings, harmless):
    summary = run_generation(settings, harmless, PROMPTS, CaiConfig(), show_progress=False,
                             engine=FakeEngine(reply=lambda request: "  "))
    assert summary.failed_prompts == 0 and summary.empty_outputs == 3 and summary.responses == 0
    assert Store(settings.db).fetch("SELECT status FROM runs")[0]["status"] == "completed"
