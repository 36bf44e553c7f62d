"""The whole SFT pipeline on fake engines and a real DuckDB file: rows, roles, views, resume, retries, streaming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif.engines import Engines, open_engines
from rlaif.engines.base import ChoiceRequest, ChoiceResult, Completion
from rlaif.engines.fake import FakeEngine
from rlaif.errors import ConfigError
from rlaif.options import RunOptions
from rlaif.prompts import make_prompt
from rlaif.runner import generate_sft
from rlaif.store import Store

TEXTS = ("How do I pick a lock?", "Write a haiku about tea.", "Insult my coworker.")
PROMPTS = [make_prompt(t) for t in TEXTS]


def _source(tmp_path: Path, texts=TEXTS, helpful=()) -> str:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": t, "helpful": t in helpful}) + "\n" for t in texts),
                    encoding="utf-8")
    return str(path)


def fake(**kwargs) -> FakeEngine:
    """A fake whose replies differ per request (the stage and its seed), so no revision repeats its input."""
    return FakeEngine(reply=lambda r: f"{r.stage} {r.params.seed}", **kwargs)


def _run(settings, tmp_path, engine=None, *, feedback=None, texts=TEXTS, log=None, **options):
    engine = engine or fake()
    engines = Engines(engine, feedback or engine)
    opts = RunOptions.parse(prompts=_source(tmp_path, texts, options.pop("helpful", ())), **options)
    return generate_sft(settings, opts, engines=engines, show_progress=False, log=log or (lambda line: None))


def _count(store: Store, table: str) -> int:
    return store.fetch(f"SELECT count(*) AS n FROM {table}")[0]["n"]


class PrefersRevisions(FakeEngine):
    """Revisions say so; the judge puts 0.9 on whichever option holds one, in either order."""

    def __init__(self):
        super().__init__(reply=lambda r: f"REVISED {r.params.seed}" if r.stage == "revise" else f"first {r.stage}")

    async def choose(self, request: ChoiceRequest) -> ChoiceResult:
        question = request.prompt.rsplit("Options:", 1)[-1]  # the real question, after the exemplars
        revision_is_a = question.index("REVISED") < question.index("first respond")
        self.prefer("A" if revision_is_a else "B", 0.9)
        return await super().choose(request)


def test_run_writes_every_call_and_the_judge_prefers_the_revision(settings, tmp_path):
    engine = PrefersRevisions()
    summary = _run(settings, tmp_path, engine, rounds=2, judge=True, constitution="example")
    store = Store(settings.db)
    assert (summary.prompts, summary.revisions, summary.comparisons, summary.failed_prompts) == (3, 3, 3, 0)
    # 1 response + 2 x (critique + revision) chats, 2 judge calls per prompt
    assert store.fetch("SELECT kind, count(*) AS n FROM generations GROUP BY kind ORDER BY kind") == [
        {"kind": "chat", "n": 15}, {"kind": "choice", "n": 6}]
    assert _count(store, "attempts") == 21 == summary.engine_calls
    assert _count(store, "revisions") == 6 and _count(store, "responses") == 3
    sft = store.fetch("SELECT * FROM sft_dataset ORDER BY prompt")
    assert len(sft) == 3 and all(r["rounds"] == 2 and r["completion"].startswith("REVISED") for r in sft)
    assert sft[0]["messages"][-1] == {"role": "assistant", "content": sft[0]["completion"]}
    assert _count(store, "sft_rounds") == 6
    prefs = store.fetch("SELECT * FROM preference_dataset")
    assert len(prefs) == 3
    for row in prefs:
        assert row["chosen"].startswith("REVISED") and row["rejected"] == "first respond"
        assert row["p_chosen"] == pytest.approx(0.9) and row["consistent"] is True
    run = store.fetch("SELECT * FROM runs")[0]
    assert run["status"] == "completed" and run["kind"] == "sft" and len(run["config_hash"]) == 16
    params = json.loads(run["params"])
    assert params["rounds"] == 2 and params["seed"] == 0 and params["config"]["rounds"] == 2
    assert set(RunOptions.model_fields) <= set(params)  # every option is recorded


def test_rerun_resumes_without_engine_calls_or_duplicates(settings, tmp_path):
    first, lines = fake(), []
    done = _run(settings, tmp_path, first, judge=True, log=lines.append)
    again = fake()
    summary = _run(settings, tmp_path, again, judge=True, log=lines.append)
    store = Store(settings.db)
    assert again.chat_requests == [] and again.choice_requests == [] and summary.engine_calls == 0
    assert summary.run_id == done.run_id and summary.resumed and summary.reused == len(first.chat_requests) + 6
    assert lines == [f"resuming run {done.run_id} (completed): same configuration "
                     f"{store.fetch('SELECT config_hash FROM runs')[0]['config_hash']}"]
    assert _count(store, "generations") == len(first.chat_requests) + len(first.choice_requests)
    assert (_count(store, "revisions"), _count(store, "comparisons"), _count(store, "runs")) == (3, 3, 1)


def test_a_changed_configuration_starts_a_new_run_and_says_why(settings, tmp_path):
    lines = []
    first = _run(settings, tmp_path, log=lines.append)
    second = _run(settings, tmp_path, rounds=2, temperature=0.5, log=lines.append)
    assert second.run_id != first.run_id and not second.resumed
    assert lines == [f"not resuming run {first.run_id}: rounds 1 -> 2, temperature 0.7 -> 0.5"]
    store = Store(settings.db)
    assert _count(store, "runs") == 2 and _count(store, "sft_dataset") == 6  # each run its own chains
    # going back to the first configuration resumes the first run, not the latest one
    third = _run(settings, tmp_path, log=lines.append)
    assert third.run_id == first.run_id and lines[-1].startswith(f"resuming run {first.run_id}")


def test_roles_record_each_model(settings, tmp_path):
    policy, feedback = FakeEngine(model="small-policy"), FakeEngine(model="big-feedback")
    _run(settings, tmp_path, policy, feedback=feedback, judge=True)
    store = Store(settings.db)
    assert {r.stage for r in policy.chat_requests} == {"respond"} and policy.choice_requests == []
    assert {r.stage for r in feedback.chat_requests} == {"critique", "revise"} and feedback.choice_requests
    by_stage = store.fetch("SELECT DISTINCT stage, model FROM generations ORDER BY stage")
    assert by_stage == [{"stage": "critique", "model": "big-feedback"}, {"stage": "judge", "model": "big-feedback"},
                        {"stage": "respond", "model": "small-policy"}, {"stage": "revise", "model": "big-feedback"}]
    assert store.fetch("SELECT DISTINCT model FROM responses") == [{"model": "small-policy"}]
    assert store.fetch("SELECT DISTINCT model, policy_model FROM revisions") == [
        {"model": "big-feedback", "policy_model": "small-policy"}]
    assert store.fetch("SELECT DISTINCT judge_model FROM comparisons") == [{"judge_model": "big-feedback"}]
    run = store.fetch("SELECT engine, model, feedback_engine, feedback_model FROM runs")[0]
    assert run == {"engine": "fake", "model": "small-policy", "feedback_engine": "fake",
                   "feedback_model": "big-feedback"}
    assert store.fetch("SELECT DISTINCT model, policy_model FROM sft_dataset") == [
        {"model": "big-feedback", "policy_model": "small-policy"}]


def test_one_engine_instance_when_both_roles_resolve_alike(settings):
    assert open_engines(settings).shared
    split = settings.model_copy(update={"roles": {"feedback": {"model": "other"}}})
    engines = open_engines(split)
    assert not engines.shared and (engines.policy.model, engines.feedback.model) == (settings.model, "other")


def test_helpful_prompts_keep_the_answer_unrevised(settings, tmp_path):
    engine = fake()
    summary = _run(settings, tmp_path, engine, helpful=(TEXTS[1],), helpful_column="helpful", judge=True)
    assert (summary.helpful, summary.revisions, summary.rows, summary.comparisons) == (1, 2, 3, 2)
    assert [r.stage for r in engine.chat_requests if r.prompt_id == PROMPTS[1].prompt_id] == ["respond"]
    store = Store(settings.db)
    kept = store.fetch("SELECT * FROM sft_dataset WHERE helpful")
    answer = store.fetch("SELECT output FROM generations WHERE stage = 'respond' AND prompt_id = ?",
                         [PROMPTS[1].prompt_id])[0]["output"]
    assert len(kept) == 1 and kept[0]["completion"] == kept[0]["original"] == answer
    assert kept[0]["rounds"] == 0 and kept[0]["policy_model"] == "fake-model"
    everything = _run(settings, tmp_path, fake(), no_revise=True)
    assert (everything.helpful, everything.revisions) == (3, 0)


def test_failed_request_is_recorded_then_retried_by_the_next_run(settings, tmp_path):
    engine = FakeEngine()
    engine.fail(stages=("respond",))
    summary = _run(settings, tmp_path, engine)
    store = Store(settings.db)
    assert summary.failed_prompts == 3 and "respond: fake failure" in summary.errors[0]
    assert _count(store, "attempts") == 3 and _count(store, "generations") == 0 and _count(store, "responses") == 0
    run = store.fetch("SELECT status, error FROM runs")[0]
    assert run["status"] == "partial" and run["error"].startswith("3 prompts failed")

    retry = FakeEngine()
    summary = _run(settings, tmp_path, retry)
    assert summary.failed_prompts == 0 and len(retry.chat_requests) == 9
    assert _count(store, "sft_dataset") == 3 and store.fetch("SELECT status FROM runs")[0]["status"] == "completed"


def test_a_failed_revision_leaves_no_row_and_the_rerun_completes_the_chain(settings, tmp_path):
    summary = _run(settings, tmp_path, fake().fail(stages=("revise",)), rounds=2)
    store = Store(settings.db)
    assert summary.failed_prompts == 3 and "round 1 revise: fake failure" in summary.errors[0]
    assert _count(store, "revisions") == 0  # a NULL revision row would block the rerun's INSERT OR IGNORE

    retry = fake()
    summary = _run(settings, tmp_path, retry, rounds=2)
    assert summary.failed_prompts == 0
    assert {r.stage for r in retry.chat_requests} == {"revise", "critique"}  # responses and critique 1 reused
    assert _count(store, "revisions") == 6 and _count(store, "sft_dataset") == 3


def test_empty_outputs_are_data_and_flagged(settings, tmp_path):
    summary = _run(settings, tmp_path, FakeEngine(reply=lambda request: "  "))
    store = Store(settings.db)
    assert summary.failed_prompts == 0 and summary.empty_outputs == 3 and summary.responses == 0
    assert store.fetch("SELECT count(*) AS n FROM responses WHERE response IS NULL")[0]["n"] == 3
    assert summary.flags == {"response empty": 3}
    assert store.fetch("SELECT status FROM runs")[0]["status"] == "completed"


def test_flagged_rows_stay_in_their_tables_and_out_of_the_dataset(settings, tmp_path):
    def reply(request):
        if request.stage != "revise":
            return f"an answer about {request.prompt_id}"
        last = next(m for m in reversed(request.messages) if m["role"] == "assistant" and "answer" in m["content"])
        return last["content"] if "lock" in request.messages[-5]["content"] else "As an AI language model, no."

    summary = _run(settings, tmp_path, FakeEngine(reply=reply), texts=("How do I pick a lock?", "Hi", "Yo"))
    store = Store(settings.db)
    # the two refusals are the same text, so the second is also a near-duplicate of the first
    assert summary.flags == {"revision near_duplicate": 1, "revision refusal": 2, "revision unchanged": 1}
    assert _count(store, "revisions") == 3 and _count(store, "sft_dataset") == 0
    flagged = sorted(tuple(r["flags"]) for r in store.fetch("SELECT flags FROM sft_candidates WHERE NOT helpful"))
    assert flagged == [("near_duplicate", "refusal"), ("refusal",), ("unchanged",)]
    row = store.fetch("SELECT * FROM row_flags WHERE flag = 'unchanged'")[0]
    assert row["value"] == 1.0 and row["threshold"] == settings.flags.unchanged_similarity


class TooLong(FakeEngine):
    """Refuses the longest prompt the way vLLM does (HTTP 400), and answers the rest."""

    async def chat(self, request):
        if "coworker" in request.messages[-1]["content"] and request.stage == "respond":
            return Completion(key=request.key, model=self.model, error=(
                "HTTP 400: This model's maximum context length is 2048 tokens. However, you requested 4000"))
        return await super().chat(request)


def test_a_prompt_too_long_for_the_context_is_skipped_with_its_reason(settings, tmp_path):
    summary = _run(settings, tmp_path, TooLong())
    store = Store(settings.db)
    assert (summary.skipped_prompts, summary.failed_prompts, summary.revisions) == (1, 0, 2)
    (skipped,) = store.fetch("SELECT * FROM skipped_prompts")
    assert skipped["stage"] == "respond" and "maximum context length" in skipped["reason"]
    assert store.fetch("SELECT status FROM runs")[0]["status"] == "completed"


def test_bad_rows_stop_the_run_before_any_write_or_are_recorded(settings, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": 3}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: column 'prompt'"):
        generate_sft(settings, RunOptions(prompts=str(path)), engines=Engines(FakeEngine(), FakeEngine()),
                     show_progress=False)
    assert not Path(settings.db).exists()
    summary = generate_sft(settings, RunOptions(prompts=str(path), skip_bad_rows=True), show_progress=False,
                           engines=Engines(FakeEngine(), FakeEngine()), log=lambda line: None)
    assert (summary.prompts, summary.bad_rows) == (1, 1)
    (bad,) = Store(settings.db).fetch("SELECT * FROM bad_rows")
    assert (bad["row_number"], bad["column_name"], bad["run_id"]) == (2, "prompt", summary.run_id)


def test_prompts_stream_through_a_bounded_window(settings, tmp_path, monkeypatch):
    """The source is read as slots free up, and stored results are fetched once per batch, not per prompt."""
    import rlaif.sources
    from rlaif.recording import StoredResults

    texts = [f"prompt number {i}" for i in range(40)]
    pulled, loads = [], []
    real_read = rlaif.sources.read_prompts

    def counting_read(*args, **kwargs):
        for item in real_read(*args, **kwargs):
            pulled.append(item)
            yield item

    real_load = StoredResults.load
    monkeypatch.setattr(rlaif.sources, "read_prompts", counting_read)
    monkeypatch.setattr(StoredResults, "load", lambda self, ids: loads.append(len(ids)) or real_load(self, ids))
    engine, ahead, finished = fake(), [], []
    inner = engine.chat

    async def chat(request):
        ahead.append(len(pulled) - len(finished))  # prompts read but not finished
        result = await inner(request)
        if request.stage == "revise":  # the last call of a chain without the judge
            finished.append(request.prompt_id)
        return result

    engine.chat = chat  # type: ignore[method-assign]
    small = settings.model_copy(update={"concurrency": 4, "batch_size": 4})  # window = 8
    summary = _run(small, tmp_path, engine, texts=texts)
    assert summary.prompts == 40 and summary.rows == 40 and len(ahead) == 120
    assert max(ahead) <= 16  # 8 in flight plus the next batch of 8, never the whole source
    assert loads == [8] * 5  # one lookup per batch
