"""The whole pipeline against a REAL vLLM server that is killed mid-run, then restarted and the run repeated.

The first run must end on its own (bounded retries), marked ``partial`` with the failures in the attempts table;
the rerun must complete every prompt without duplicate rows and without calling the engine again for anything
already stored.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from vllm_fixtures import START_TIMEOUT_S

from rlaif.config import EMBEDDED_MODEL
from rlaif.engines import Engines
from rlaif.engines.openai_engine import OpenAIEngine
from rlaif.options import RunOptions
from rlaif.prompts import make_prompt
from rlaif.runner import generate_sft
from rlaif.store import Store

pytestmark = pytest.mark.vllm

PROMPTS = [make_prompt(f"Give me one short tip about {topic}.") for topic in
           ("sleep", "tea", "bikes", "maps", "bread", "owls", "rain", "chess", "knots", "soap", "kites", "ink")]
CONFIG = {"rounds": 1, "max_tokens": 24}
RETRY = {"timeout_s": 30.0, "max_retries": 2, "backoff_base_s": 0.1, "backoff_max_s": 0.5}


class KillAfter:
    """Passes calls to an engine and SIGKILLs the server once ``n`` chat calls have come back."""

    def __init__(self, engine: OpenAIEngine, server, n: int):
        self.inner, self.server, self.n = engine, server, n
        self.name, self.model = engine.name, engine.model
        self.done = 0

    async def chat(self, request):
        result = await self.inner.chat(request)
        self.done += 1
        if self.done == self.n:
            await asyncio.to_thread(self.server.kill)
        return result

    async def choose(self, request):
        return await self.inner.choose(request)

    async def aclose(self):
        await self.inner.aclose()


def _generate(settings, tmp_path, engine):
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"prompt": p.text}) + "\n" for p in PROMPTS), encoding="utf-8")
    options = RunOptions(prompts=str(source), constitution="harmless", **CONFIG)
    return generate_sft(settings, options, engines=Engines(engine, engine), show_progress=False)


def test_killed_server_then_rerun_completes_without_duplicates_or_repeated_calls(vllm_server, settings, tmp_path):
    engine = KillAfter(OpenAIEngine([vllm_server.url], EMBEDDED_MODEL, concurrency=4, **RETRY), vllm_server, 6)
    try:
        first = _generate(settings, tmp_path, engine)
    finally:
        vllm_server.start()  # the same port, so later users of the fixture see a server again
        vllm_server.wait_healthy(timeout_s=START_TIMEOUT_S)
    store = Store(settings.db)
    assert first.failed_prompts > 0 and "connection error" in first.errors[0]
    (run1,) = store.fetch("SELECT run_id, status FROM runs")
    assert run1["status"] == "partial"
    assert store.fetch("SELECT count(*) AS n FROM attempts WHERE status = 'failed'")[0]["n"] > 0

    again = _generate(settings, tmp_path, OpenAIEngine([vllm_server.url], EMBEDDED_MODEL, concurrency=4, **RETRY))
    assert again.failed_prompts == 0 and again.engine_calls > 0 and again.run_id == first.run_id
    # every chain reached its final round (24-token turns are flagged 'truncated', so sft_dataset leaves them out)
    assert store.fetch("SELECT count(*) AS n FROM sft_candidates WHERE final")[0]["n"] == len(PROMPTS)
    assert store.fetch("SELECT count(*) AS n FROM revisions")[0]["n"] == len(PROMPTS)
    # every stored row was produced by exactly one successful engine call, across both runs
    assert store.fetch("SELECT count(*) AS n FROM generations")[0]["n"] == store.fetch(
        "SELECT count(*) AS n FROM attempts WHERE status = 'ok'")[0]["n"]
    assert store.fetch("SELECT max(c) AS m FROM (SELECT count(*) AS c FROM attempts WHERE status = 'ok' "
                       "GROUP BY key)")[0]["m"] == 1
    # the rerun resumed the partial run (same configuration), which is now complete
    assert [r["status"] for r in store.fetch("SELECT status FROM runs")] == ["completed"]
