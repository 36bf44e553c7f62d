"""The whole pipeline against a REAL vLLM server that is killed mid-run, then restarted and the run repeated.

The first run must end on its own (bounded retries), marked ``partial`` with the failures in the attempts table;
the rerun must complete every prompt without duplicate rows and without calling the engine again for anything
already stored.
"""

from __future__ import annotations

import asyncio

import pytest
from vllm_fixtures import START_TIMEOUT_S

from rlaif.config import EMBEDDED_MODEL
from rlaif.engines.openai_engine import OpenAIEngine
from rlaif.pipeline import CaiConfig
from rlaif.prompts import make_prompt
from rlaif.runner import run_generation
from rlaif.store import Store

pytestmark = pytest.mark.vllm

PROMPTS = [make_prompt(f"Give me one short tip about {topic}.") for topic in
           ("sleep", "tea", "bikes", "maps", "bread", "owls", "rain", "chess", "knots", "soap", "kites", "ink")]
CONFIG = CaiConfig(rounds=1, max_tokens=24)
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


def test_killed_server_then_rerun_completes_without_duplicates_or_repeated_calls(vllm_server, settings, harmless):
    engine = KillAfter(OpenAIEngine([vllm_server.url], EMBEDDED_MODEL, concurrency=4, **RETRY), vllm_server, 6)
    try:
        first = run_generation(settings, harmless, PROMPTS, CONFIG, engine=engine, show_progress=False)
    finally:
        vllm_server.start()  # the same port, so later users of the fixture see a server again
        vllm_server.wait_healthy(timeout_s=START_TIMEOUT_S)
    store = Store(settings.db)
    assert first.failed_prompts > 0 and "connection error" in first.errors[0]
    (run1,) = store.fetch("SELECT run_id, status FROM runs")
    assert run1["status"] == "partial"
    assert store.fetch("SELECT count(*) AS n FROM attempts WHERE status = 'failed'")[0]["n"] > 0

    again = run_generation(settings, harmless, PROMPTS, CONFIG, show_progress=False,
                           engine=OpenAIEngine([vllm_server.url], EMBEDDED_MODEL, concurrency=4, **RETRY))
    assert again.failed_prompts == 0 and again.engine_calls > 0
    assert store.fetch("SELECT count(*) AS n FROM sft_dataset")[0]["n"] == len(PROMPTS)
    assert store.fetch("SELECT count(*) AS n FROM revisions")[0]["n"] == len(PROMPTS)
    # every stored row was produced by exactly one successful engine call, across both runs
    assert store.fetch("SELECT count(*) AS n FROM generations")[0]["n"] == store.fetch(
        "SELECT count(*) AS n FROM attempts WHERE status = 'ok'")[0]["n"]
    assert store.fetch("SELECT max(c) AS m FROM (SELECT count(*) AS c FROM attempts WHERE status = 'ok' "
                       "GROUP BY key)")[0]["m"] == 1
    statuses = [r["status"] for r in store.fetch("SELECT status FROM runs ORDER BY started_at")]
    assert statuses == ["partial", "completed"]
