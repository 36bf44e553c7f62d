"""Paths (a) and (b) of ``engine_efficiency.py``, and the server-side helpers the runs share.

(a) ``OfflineWorker`` + ``run_offline``: raw ``vllm.LLM`` in a subprocess of the vLLM environment, one
``LLM.chat`` call per stage over all prompts. (b) ``run_bare``: a bare ``AsyncOpenAI`` client, every chain
started at once, at most ``concurrency`` requests on the wire. Both send the requests ``efficiency_workload``
builds with the project's stage functions, so they differ from the project's run (c) only in the machinery.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import select
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from efficiency_cpu import machine_busy_s, tree_cpu_s
from efficiency_workload import Call, Chains

from rlaif.prompts import PromptRow

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
REPLY_TIMEOUT_S = 3600.0  # one stage of several hundred prompts takes minutes on 2 cores; an hour means stuck


# --- (a) offline vLLM -----------------------------------------------------------------------------------------


class OfflineWorker:
    """``efficiency_offline.py`` in the vLLM environment: requests on its stdin, replies on a pipe of our own."""

    def __init__(self, python: Path, model_dir: Path, max_num_seqs: int, log_path: Path,
                 block_size: int | None = None, dtype: str = "auto"):
        self.log_path = log_path
        read_fd, write_fd = os.pipe()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(python), str(BENCH_DIR / "efficiency_offline.py"), str(write_fd), str(model_dir),
                 str(max_num_seqs), dtype, *([str(block_size)] if block_size else [])],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,), env=env,
                text=True,
            )
        os.close(write_fd)
        self._replies = os.fdopen(read_fd, "r", encoding="utf-8")

    def read(self) -> dict:
        """The next reply; fails with the log's tail if the worker died or stayed silent too long."""
        ready, _, _ = select.select([self._replies], [], [], REPLY_TIMEOUT_S)
        line = self._replies.readline() if ready else ""
        if not line:
            self.process.kill()
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"the offline vLLM worker stopped answering; last lines of {self.log_path}:\n{tail}")
        return json.loads(line)

    def request(self, message: dict) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps({"op": "stop"}) + "\n")
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._replies.close()


def start_offline(python: Path, model_dir: Path, max_num_seqs: int, log_path: Path,
                  block_size: int | None = None, dtype: str = "auto") -> tuple[OfflineWorker, dict]:
    """Start the worker and wait for its model; the reply carries vLLM's own load time and the options used."""
    started = time.perf_counter()
    worker = OfflineWorker(python, model_dir, max_num_seqs, log_path, block_size, dtype)
    loaded = worker.read()
    loaded["startup_s"] = time.perf_counter() - started  # process start and imports included
    return worker, loaded


def run_offline(worker: OfflineWorker, chains: Chains, prompts: Sequence[PromptRow]) -> dict:
    """Three ``LLM.chat`` calls, one per stage, each over every chain still going; returns tokens and times."""
    worker.request({"op": "reset"})  # no prefix left over from an earlier mode
    cpu_before = {"server": tree_cpu_s(worker.process.pid), "machine": machine_busy_s()}
    started = time.perf_counter()
    engine_s, tokens, respond_prompt_tokens = 0.0, 0, []
    calls: list[Call | None] = [chains.respond(p) for p in prompts]
    critique_calls: list[Call | None] = []
    for stage in ("respond", "critique", "revise"):
        live = [c for c in calls if c is not None]
        reply = worker.request({"op": "chat", "conversations": [c.messages for c in live],
                                "params": [c.vllm_params() for c in live]})
        engine_s += reply["seconds"]
        tokens += sum(reply["tokens"])
        texts = iter(reply["texts"])
        outputs = [next(texts) if c is not None else None for c in calls]
        if stage == "respond":
            respond_prompt_tokens = reply["prompt_tokens"]
            calls = critique_calls = [chains.critique(p, t) for p, t in zip(prompts, outputs)]
        elif stage == "critique":
            calls = [chains.revise(p, c, t) if c is not None else None
                     for p, c, t in zip(prompts, critique_calls, outputs)]
    seconds = time.perf_counter() - started
    cpu = {"server": tree_cpu_s(worker.process.pid) - cpu_before["server"], "client": 0.0,
           "machine": machine_busy_s() - cpu_before["machine"]}
    return {"tokens": tokens, "seconds": seconds, "engine_s": engine_s, "tokens_per_s": tokens / seconds,
            "respond_prompt_tokens": respond_prompt_tokens, "cpu": cpu}


# --- (b) a bare concurrent client -----------------------------------------------------------------------------


async def _bare(url: str, model: str, chains: Chains, prompts: Sequence[PromptRow], concurrency: int) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=3600.0)
    window = asyncio.Semaphore(concurrency)  # held only while a request is on the wire, as the engine does
    tokens = 0
    respond_prompt_tokens: dict[str, int] = {}

    async def send(call: Call) -> str:
        nonlocal tokens
        async with window:
            response = await client.chat.completions.create(**call.openai_kwargs(model))
        tokens += response.usage.completion_tokens
        if call.stage == "respond":
            respond_prompt_tokens[call.prompt_id] = response.usage.prompt_tokens
        return response.choices[0].message.content or ""

    async def chain(prompt: PromptRow) -> None:
        critique_call = chains.critique(prompt, await send(chains.respond(prompt)))
        if critique_call is not None:
            revise_call = chains.revise(prompt, critique_call, await send(critique_call))
            if revise_call is not None:
                await send(revise_call)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(chain(p) for p in prompts))
        seconds = time.perf_counter() - started
    finally:
        await client.close()
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "respond_prompt_tokens": [respond_prompt_tokens[p.prompt_id] for p in prompts]}


def run_bare(url: str, model: str, chains: Chains, prompts: Sequence[PromptRow], concurrency: int,
             server_pid: int) -> dict:
    """Every chain at once, ``concurrency`` requests in flight; timed from the first request to the last reply.

    Also counts the CPU seconds of this process (the client) and of the server's process tree meanwhile.
    """
    before = {"client": _self_cpu_s(), "server": tree_cpu_s(server_pid), "machine": machine_busy_s()}
    result = asyncio.run(_bare(url, model, chains, prompts, concurrency))
    after = {"client": _self_cpu_s(), "server": tree_cpu_s(server_pid), "machine": machine_busy_s()}
    result["cpu"] = {name: after[name] - before[name] for name in before}
    return result


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the server ------------------------------------------------------------------------------------------------


def reset_prefix_cache(url: str) -> bool:
    """Empty the server's prefix cache between runs (needs VLLM_SERVER_DEV_MODE=1 in the server's environment)."""
    root = url.rstrip("/").removesuffix("/v1")
    request = urllib.request.Request(root + "/reset_prefix_cache", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return bool(json.load(response).get("success", response.status == 200))
    except (OSError, ValueError):
        return False


async def _send_all(url: str, model: str, bodies: list[dict], concurrency: int) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=3600.0)
    window = asyncio.Semaphore(concurrency)

    async def one(body: dict) -> None:
        async with window:
            await client.chat.completions.create(model=model, **body)

    try:
        await asyncio.gather(*(one(b) for b in bodies))
    finally:
        await client.close()


def warm_up(url: str, model: str, n: int = 8) -> float:
    """A few short requests so one-time costs (first allocations, first batches) are not charged to (b)."""
    started = time.perf_counter()
    bodies = [{"messages": [{"role": "user", "content": f"Say hello ({i})."}], "max_tokens": 8} for i in range(n)]
    asyncio.run(_send_all(url, model, bodies, n))
    return time.perf_counter() - started


def replay_hit_rate(url: str, model: str, messages: list[list[dict]], concurrency: int,
                    stats: Callable[[str], dict[str, Any]]) -> float | None:
    """The prefix-cache hit rate of these prompts alone, in steady state.

    After a reset, the first prompt goes alone (it computes the shared prefix); the counters then cover the
    others, each prefilled and given one greedy token, at the run's concurrency.
    """
    if not messages or not reset_prefix_cache(url):
        return None
    asyncio.run(_send_all(url, model, [{"messages": messages[0], "max_tokens": 1, "temperature": 0}], 1))
    before = stats(url)
    bodies = [{"messages": m, "max_tokens": 1, "temperature": 0} for m in messages[1:]]
    asyncio.run(_send_all(url, model, bodies, concurrency))
    return delta_hit_rate(before, stats(url))


def delta_hit_rate(before: dict, after: dict) -> float | None:
    """Hits over queries between two readings of the prefix-cache counters (both counted in tokens)."""
    if None in (before.get("hits"), before.get("queries"), after.get("hits"), after.get("queries")):
        return None
    queries = after["queries"] - before["queries"]
    return (after["hits"] - before["hits"]) / queries if queries > 0 else None
