"""Preference runs on fake engines and a real DuckDB file: candidates, pairing caps, roles, resume, overlap,
SL-CAI pairs, user pair files, canaries, flags, the CLI and the real Prefect flow."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from helpers import refused_before_any_write

from rlaif.engines import Engines
from rlaif.engines.base import SamplingParams
from rlaif.engines.fake import FakeEngine
from rlaif.errors import ConfigError
from rlaif.judge.pairing import all_pairs
from rlaif.options import PrefsOptions
from rlaif.prefs.runner import generate_prefs
from rlaif.prompts import make_prompt
from rlaif.stages import RunContext, derive_seed
from rlaif.stages.respond import response_messages
from rlaif.stages.sample import sample_requests
from rlaif.store import Store

TEXTS = ("How do I pick a lock?", "Write a haiku about tea.", "Insult my coworker.")


def _source(tmp_path: Path, texts=TEXTS) -> str:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts), encoding="utf-8")
    return str(path)


def _fenced(prompt: str) -> tuple[str, str]:
    """The two candidates of the real question (after the exemplars) of a multiple-choice judge prompt."""
    options = prompt.rsplit("Options:", 1)[1]
    first = options.split("(A) <<<", 1)[1].split(">>>", 1)[0]
    second = options.split("(B) <<<", 1)[1].split(">>>", 1)[0]
    return first, second


def prefers_longer(request):
    """A consistent judge: 0.8 on whichever slot holds the longer candidate, in either order."""
    first, second = _fenced(request.prompt)
    return {"A": -0.2231, "B": -1.6094} if len(first) > len(second) else {"A": -1.6094, "B": -0.2231}


def policy_fake(**kwargs) -> FakeEngine:
    """Samples that differ per seed, and in length, so pairs have a clear longer answer."""
    return FakeEngine(reply=lambda r: f"answer {r.params.seed}" + " more" * (r.params.seed % 5), **kwargs)


def judge_fake(**kwargs) -> FakeEngine:
    engine = FakeEngine(**kwargs)
    engine.choice_rule = prefers_longer
    return engine


def _run(settings, tmp_path, policy=None, feedback=None, *, log=None, texts=TEXTS, **options):
    policy = policy or policy_fake()
    engines = Engines(policy, feedback or policy)
    opts = PrefsOptions.parse(prompts=_source(tmp_path, texts), **options)
    return generate_prefs(settings, opts, engines=engines, show_progress=False, log=log or (lambda line: None))


def _count(store: Store, sql: str) -> int:
    return store.fetch(f"SELECT count(*) AS n FROM {sql}")[0]["n"]


def test_samples_are_seeded_per_prompt_and_index(harmless):
    prompt = make_prompt("Tell me a joke.")
    ctx = RunContext("r", 7, harmless, SamplingParams(temperature=0.9, max_tokens=32), "cfg")
    requests = sample_requests(ctx, prompt, 3, "m")
    assert [r.params.seed for r in requests] == [derive_seed(7, prompt.prompt_id, "sample", i) for i in range(3)]
    assert len({r.key for r in requests}) == 3 and {r.stage for r in requests} == {"sample"}
    assert all(list(r.messages) == response_messages(prompt, harmless) for r in requests)
    assert all(r.params.temperature == 0.9 and r.params.max_tokens == 32 for r in requests)


def test_exact_requests_per_role_with_a_pairing_cap(settings, tmp_path):
    policy, feedback = policy_fake(model="small-policy"), judge_fake(model="big-judge")
    summary = _run(settings, tmp_path, policy, feedback, samples=4, max_pairs=3, principles=2, seed=7)
    prompts = [make_prompt(t) for t in TEXTS]
    # the policy: 4 seeded samples per prompt, nothing else; the feedback model: only the judge
    assert sorted((r.prompt_id, r.params.seed) for r in policy.chat_requests) == sorted(
        (p.prompt_id, derive_seed(7, p.prompt_id, "sample", i)) for p in prompts for i in range(4))
    assert policy.choice_requests == [] and feedback.chat_requests == []
    # per prompt: 3 of the 6 pairs (the seeded draw), x 2 principles x 2 orders; plus one canary check (2 x 2)
    per_prompt = {p.prompt_id: [r for r in feedback.choice_requests if r.prompt_id == p.prompt_id] for p in prompts}
    assert all(len(rs) == 12 for rs in per_prompt.values()) and len(feedback.choice_requests) == 3 * 12 + 4
    store = Store(settings.db)
    for p in prompts:
        texts = {r["sample"]: r["response"] for r in store.fetch(
            "SELECT sample, response FROM candidates WHERE prompt_id = ?", [p.prompt_id])}
        assert sorted(texts) == [0, 1, 2, 3]
        drawn = {frozenset((texts[i], texts[j])) for i, j in all_pairs(4, 3, seed=7, salt=p.prompt_id)}
        shown = {frozenset(_fenced(r.prompt)) for r in per_prompt[p.prompt_id]}
        assert shown == drawn  # both orders of exactly the drawn pairs
    assert (summary.pairs, summary.judged, summary.verdicts, summary.failed_prompts) == (9, 9, 18, 0)
    assert _count(store, "comparisons") == 18 and _count(store, "candidates") == 12
    assert store.fetch("SELECT DISTINCT judge_model, policy_model FROM comparisons") == [
        {"judge_model": "big-judge", "policy_model": "small-policy"}]
    prefs = store.fetch("SELECT chosen, rejected, p_chosen, n_principles, source_chosen FROM preference_dataset")
    assert len(prefs) == 9
    assert all(len(r["chosen"]) > len(r["rejected"]) and r["n_principles"] == 2 for r in prefs)
    assert all(r["p_chosen"] == pytest.approx(0.8, abs=1e-3) and r["source_chosen"].startswith("sample:")
               for r in prefs)
    (canary,) = store.fetch("SELECT count(DISTINCT seq) AS checks, count(*) AS n FROM canary_results")
    assert canary == {"checks": 1, "n": 2}
    run = store.fetch("SELECT kind, status, engine, model, feedback_model FROM runs")[0]
    assert run == {"kind": "prefs", "status": "completed", "engine": "fake", "model": "small-policy",
                   "feedback_model": "big-judge"}


def test_rerun_resumes_and_a_changed_configuration_says_why(settings, tmp_path):
    lines: list[str] = []
    first_policy, first_judge = policy_fake(), judge_fake()
    first = _run(settings, tmp_path, first_policy, first_judge, samples=3, log=lines.append)
    again_policy, again_judge = policy_fake(), judge_fake()
    again = _run(settings, tmp_path, again_policy, again_judge, samples=3, log=lines.append)
    assert again_policy.chat_requests == [] and again_judge.choice_requests == [] and again.engine_calls == 0
    assert again.run_id == first.run_id and again.resumed
    assert again.reused == first.engine_calls == len(first_policy.chat_requests) + len(first_judge.choice_requests)
    store = Store(settings.db)
    assert lines[-1].startswith(f"resuming run {first.run_id} (completed): same configuration")
    assert (_count(store, "comparisons"), _count(store, "candidates"), _count(store, "runs")) == (9, 9, 1)
    assert _count(store, "generations") == first.engine_calls
    # a new cap: a new run, said in one line; the same seeds, so the candidates come from the database
    capped_policy, capped_judge = policy_fake(), judge_fake()
    capped = _run(settings, tmp_path, capped_policy, capped_judge, samples=3, max_pairs=1, log=lines.append)
    assert lines[-1] == f"not resuming run {first.run_id}: max_pairs None -> 1"
    assert capped.run_id != first.run_id and capped_policy.chat_requests == [] and capped.pairs == 3
    assert capped_judge.choice_requests == []  # the drawn pairs were judged by the first run already


def test_a_failed_sample_leaves_its_prompt_unpaired_and_the_rerun_sends_only_it(settings, tmp_path, harmless):
    prompt = make_prompt(TEXTS[0])
    ctx = RunContext("r", settings.seed, harmless, PrefsOptions(prompts="x").sampling(), "cfg")
    doomed = sample_requests(ctx, prompt, 3, "fake-model")[1]  # the key the run will build for sample 1
    first = _run(settings, tmp_path, policy_fake().fail(doomed.key), judge_fake(), samples=3)
    assert first.failed_prompts == 1 and first.pairs == 6
    store = Store(settings.db)
    assert _count(store, f"comparisons WHERE prompt_id = '{prompt.prompt_id}'") == 0
    assert store.fetch("SELECT status FROM runs")[0]["status"] == "partial"
    retry_policy, retry_judge = policy_fake(), judge_fake()
    second = _run(settings, tmp_path, retry_policy, retry_judge, samples=3)
    assert second.failed_prompts == 0 and second.run_id == first.run_id
    assert [r.key for r in retry_policy.chat_requests] == [doomed.key]  # only the failed sample again
    assert {r.prompt_id for r in retry_judge.choice_requests} == {prompt.prompt_id}
    assert _count(store, "comparisons") == 9 and store.fetch("SELECT status FROM runs")[0]["status"] == "completed"


class Timed(FakeEngine):
    """A fake that takes ``delay(request)`` seconds per call and keeps (kind, stage, start, end) of each."""

    def __init__(self, delay, **kwargs):
        super().__init__(reply=lambda r: f"answer {r.params.seed}" + " more" * (r.params.seed % 5), **kwargs)
        self.delay, self.timeline = delay, []

    async def _timed(self, kind, request, call):
        start = time.perf_counter()
        await asyncio.sleep(self.delay(request))
        result = await call(request)
        self.timeline.append((kind, request.stage, request.prompt_id, start, time.perf_counter()))
        return result

    async def chat(self, request):
        return await self._timed("chat", request, super().chat)

    async def choose(self, request):
        return await self._timed("choice", request, super().choose)


def test_generation_and_judging_overlap_across_roles(settings, tmp_path):
    """A prompt's pairs are judged as soon as its own candidates exist, while later prompts still sample."""
    texts = [f"Question number {i}?" for i in range(6)]
    slow = {make_prompt(t).prompt_id: 0.03 * i for i, t in enumerate(texts)}  # later prompts sample slower
    policy = Timed(lambda r: slow[r.prompt_id], model="policy")
    feedback = Timed(lambda r: 0.005, model="judge")
    feedback.choice_rule = prefers_longer
    summary = _run(settings, tmp_path, policy, feedback, texts=texts, samples=2)
    assert summary.judged == 6 and summary.failed_prompts == 0
    last_sample_done = max(end for kind, *_, end in policy.timeline)
    first_judged = min(start for kind, stage, pid, start, _ in feedback.timeline if pid in slow)
    assert first_judged < last_sample_done - 0.05  # judging began well before sampling ended
    fast, slowest = make_prompt(texts[0]).prompt_id, make_prompt(texts[-1]).prompt_id
    judged_fast = max(end for _, _, pid, _, end in feedback.timeline if pid == fast)
    sampled_slow = max(end for _, _, pid, _, end in policy.timeline if pid == slowest)
    assert judged_fast < sampled_slow  # the first prompt was fully judged before the last finished sampling


def test_from_run_judges_each_original_against_its_final_revision(settings, tmp_path):
    from rlaif.options import RunOptions
    from rlaif.runner import generate_sft

    sft_engine = FakeEngine(reply=lambda r: f"{r.stage} {r.params.seed}")
    sft = generate_sft(settings, RunOptions.parse(prompts=_source(tmp_path), rounds=2),
                       engines=Engines(sft_engine, sft_engine), show_progress=False, log=lambda line: None)
    summary = generate_prefs(settings, PrefsOptions.parse(from_run=sft.run_id), show_progress=False,
                             log=lambda line: None)  # the feedback role only: settings' fake engine
    store = Store(settings.db)
    assert (summary.prompts, summary.pairs, summary.judged, summary.candidates) == (3, 3, 3, 0)
    rows = store.fetch("SELECT c.chain_id, c.response_a, c.response_b, c.source_a, c.source_b, v.revision "
                       "FROM comparisons c JOIN revisions v ON v.chain_id = c.chain_id AND v.round = 2 "
                       "WHERE c.run_id = ?", [summary.run_id])
    assert len(rows) == 3
    for r in rows:
        assert {r["source_a"], r["source_b"]} == {"original", "revision"}
        assert r["revision"] in (r["response_a"], r["response_b"])  # the final round's revision
    run = store.fetch("SELECT kind, source, engine FROM runs WHERE run_id = ?", [summary.run_id])[0]
    assert run == {"kind": "prefs", "source": f"run:{sft.run_id}", "engine": "none"}
    with pytest.raises(ConfigError, match="--from-run nope: no such run"):
        generate_prefs(settings, PrefsOptions.parse(from_run="nope"), show_progress=False)
    with pytest.raises(ConfigError, match="a 'prefs' run has no revisions"):
        generate_prefs(settings, PrefsOptions.parse(from_run=summary.run_id), show_progress=False)


def test_canaries_at_the_start_and_every_n_pairs_stored_once(settings, tmp_path):
    opts = PrefsOptions.parse(prompts=_source(tmp_path), samples=3)
    kwargs = dict(show_progress=False, log=lambda line: None, canary_every=4)
    first = generate_prefs(settings, opts, engines=Engines(policy_fake(), judge_fake()), **kwargs)
    assert first.pairs == 9 and first.canaries == 3  # at 0 pairs, then past 4 and 8
    judge = judge_fake()
    again = generate_prefs(settings, opts, engines=Engines(policy_fake(), judge), **kwargs)
    assert again.canaries == 3 and judge.choice_requests == []
    store = Store(settings.db)
    checks = store.fetch("SELECT seq, canary_id, correct FROM canary_results ORDER BY seq")
    assert [c["seq"] for c in checks] == [0, 1, 2] and len({c["canary_id"] for c in checks}) == 3


def _pair_file(tmp_path: Path, rows: list[dict], name="pairs.csv") -> str:
    import csv

    path = tmp_path / name
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "response_a", "response_b"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


PAIRS = [
    {"prompt": "How do I boil an egg?", "response_a": "Simmer it for seven minutes.", "response_b": "Eggs."},
    {"prompt": "How do I boil an egg?", "response_a": "Boil it for six minutes, then cool it.",
     "response_b": "Boil it for ten minutes."},
    {"prompt": "Say hello.", "response_a": "Hello there, friend!", "response_b": "Hi to you."},
]


def test_judge_pairs_labels_a_pair_file_and_stats_counts_its_flags(settings, tmp_path, capsys, monkeypatch):
    from rlaif.cli import main

    monkeypatch.setattr("rlaif.engines.create_engine", lambda s, role="policy": judge_fake())
    db, pairs = str(settings.db), _pair_file(tmp_path, PAIRS)
    assert main(["--db", db, "--engine", "fake", "judge", "pairs", "--pairs", pairs, "--no-prefect",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 pairs read, 3 of 3 pairs judged (3 verdicts, 0 unreadable)" in out
    assert "pair length_ratio 1" in out and "canaries: 1 checks" in out, out
    store = Store(settings.db)
    dataset = store.fetch("SELECT prompt, chosen FROM preference_dataset ORDER BY chosen")
    assert dataset == [{"prompt": "How do I boil an egg?", "chosen": "Boil it for six minutes, then cool it."},
                       {"prompt": "Say hello.", "chosen": "Hello there, friend!"}]  # "Eggs." is 5x shorter
    (flagged,) = store.fetch("SELECT flags, source_a FROM preference_candidates WHERE flagged")
    assert flagged == {"flags": ["length_ratio"], "source_a": "user"}
    assert main(["--db", db, "stats"]) == 0
    assert any(line.split()[1:] == ["pair", "length_ratio", "1"] for line in capsys.readouterr().out.splitlines())


def test_a_bad_pair_row_stops_judge_pairs_before_any_write(tmp_path, capsys):
    db = tmp_path / "never.duckdb"
    bad = _pair_file(tmp_path, [*PAIRS[:1], {"prompt": "Hi", "response_a": "Hello", "response_b": ""}])
    message = f"error: {bad}:2: column 'response_b': expected text, got an empty string"
    assert refused_before_any_write(["--db", str(db), "--engine", "fake", "judge", "pairs", "--pairs", bad,
                                     "--no-prefect"], db, message, capsys) == message


def test_generate_prefs_cli_resumes_and_says_when_it_does_not(settings, tmp_path, capsys, monkeypatch):
    from rlaif.cli import main

    monkeypatch.setattr("rlaif.engines.create_engine", lambda s, role="policy": judge_fake(
        reply=lambda r: f"answer {r.params.seed}" + " more" * (r.params.seed % 5)))
    command = ["--db", str(settings.db), "--engine", "fake", "generate", "prefs", "--prompts", _source(tmp_path),
               "--samples", "3", "--no-prefect", "--no-progress"]
    assert main(command) == 0
    out = capsys.readouterr().out
    run_id = out.split()[1].rstrip(":")
    assert "3 prompts, 9 candidates sampled (0 empty), 9 of 9 pairs judged (9 verdicts, 0 unreadable)" in out
    assert "flags hit:" in out and "canaries: 1 checks" in out and "tok/s" in out
    assert main(command) == 0
    assert f"resuming run {run_id} (completed)" in capsys.readouterr().out
    assert main([*command, "--principles", "2"]) == 0
    assert f"not resuming run {run_id}: principles 1 -> 2" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--samples", "1"], "error: --samples must be between 2 and 32, got 1"),
    (["--judge-mode", "vote"], "error: --judge-mode must be 'choice', 'cot', 'score' or 'contrast', got 'vote'"),
    (["--from-run", "x"], "error: give exactly one of --prompts, --from-run or --pairs (got --prompts, --from-run)"),
    (["--principles", "9"], "error: principles must be between 1 and 6"),
])
def test_generate_prefs_option_errors_are_one_line_before_any_write(tmp_path, capsys, args, message):
    db = tmp_path / "never.duckdb"
    refused_before_any_write(["--db", str(db), "--engine", "fake", "generate", "prefs", "--prompts",
                              _source(tmp_path), "--no-prefect", *args], db, message, capsys)


@pytest.mark.prefect
def test_the_rl_cai_flow_runs_and_resumes(prefect_harness, tmp_path, monkeypatch):
    import rlaif.flows.rl_cai

    monkeypatch.setattr("rlaif.engines.create_engine", lambda s, role="policy": judge_fake(
        reply=lambda r: f"answer {r.params.seed}" + " more" * (r.params.seed % 5)))
    db = tmp_path / "flow.duckdb"
    options = PrefsOptions.parse(prompts=_source(tmp_path), samples=3)
    overrides = {"db": str(db), "engine": "fake"}
    summary = rlaif.flows.rl_cai.rl_cai_flow(options=options, settings_overrides=overrides, show_progress=False)
    assert (summary["prompts"], summary["judged"], summary["failed_prompts"], summary["canaries"]) == (3, 9, 0, 1)
    (run,) = Store(db).fetch("SELECT kind, status, prefect_flow_run_id FROM runs")
    assert run["kind"] == "prefs" and run["status"] == "completed" and run["prefect_flow_run_id"]
    again = rlaif.flows.rl_cai.rl_cai_flow(options=options.model_dump(), settings_overrides=overrides,
                                     show_progress=False)
    assert again["engine_calls"] == 0 and again["resumed"] and again["run_id"] == summary["run_id"]


@pytest.mark.vllm
def test_generate_prefs_against_a_real_vllm_server(vllm_server, settings, tmp_path):
    """Both roles on the session's vLLM server: seeded samples, the log-prob judge, then a resume that sends
    nothing."""
    from rlaif.config import EMBEDDED_MODEL

    served = settings.model_copy(update={"engine": "openai", "model": EMBEDDED_MODEL,
                                         "base_url": [vllm_server.url]})
    opts = PrefsOptions.parse(prompts=_source(tmp_path), samples=2, max_tokens=24, judge_mode="choice",
                              temperature=1.0)
    first = generate_prefs(served, opts, show_progress=False, log=lambda line: None)
    assert first.failed_prompts == 0 and first.candidates == 6 and first.judged == first.pairs >= 2
    store = Store(settings.db)
    rows = store.fetch("SELECT p_a_ab, p_a_ba, method, judge_model, policy_model FROM comparisons")
    assert len(rows) == first.pairs and all(0 < r["p_a_ab"] < 1 and 0 < r["p_a_ba"] < 1 for r in rows)
    assert {(r["method"], r["judge_model"], r["policy_model"]) for r in rows} == {
        ("logprobs", EMBEDDED_MODEL, EMBEDDED_MODEL)}
    again = generate_prefs(served, opts, show_progress=False, log=lambda line: None)
    assert again.engine_calls == 0 and again.resumed and again.judged == first.judged
