"""Rollouts from a vLLM server: the trainer samples on an OpenAI-compatible vLLM server and pushes each update to it.

On a GPU, generation is most of an RL step; OpenRLHF, verl and TRL's GRPO (``use_vllm``) therefore sample on
vLLM and keep its weights in step with the trainer's. Here the server is `rlaif serve` (with the setting
``serve_weight_updates``) or the user's own, reached over HTTP, so the trainer and the server may run in
different environments, processes or machines sharing a file system.

How the weights travel, one of two ways (``push``):
- **LoRA adapters** (the run trains LoRA, ``--lora-r``): after each update the adapter (a few MB) is saved and
  loaded into the running server under a new name (``POST /v1/load_lora_adapter``, which vLLM allows when
  started with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` and ``--enable-lora``); the next rollouts ask for that
  name, and the previous adapter is unloaded. A new name also means a fresh prefix cache: vLLM keys cached
  blocks by adapter.
- **Full weights** (every weight trains): the policy is saved as safetensors and the server reloads them in
  place (``POST /collective_rpc`` with ``reload_weights``, an endpoint of vLLM's development mode,
  ``VLLM_SERVER_DEV_MODE=1``); then ``POST /reset_prefix_cache``, since blocks cached under the old weights
  would otherwise be reused.
Which is cheaper per step is measured in ``bench/rl_vllm.py`` (docs/benchmarks.md).

Policy lag: the push happens after the update and before the next rollouts are requested, so step n + 1 samples
from the weights of update n: a lag of zero updates, never more than one. The tokens are all the trainer takes
from vLLM; every log-prob of the loss (the old policy's, the reference's) is recomputed by the trainer on its own
weights (``rl_step.prepare``), so PPO's ratio compares the trainer with itself, and the sampler's lower
precision (bf16 on many servers) only makes the samples slightly off-policy, never the ratio wrong.

Sampling is pure temperature sampling with the prompt sent as token ids (the same ids the in-process sampler
feeds), ``top_p=1``, ``top_k`` off, the run's end-of-turn ids as stop tokens and one seed per rollout derived
from the run seed, step and position, so a resumed run asks for the same requests (whether vLLM then repeats
the same sample depends on its dtype: docs/engines.md, "Seeds").
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rlaif.errors import EngineError
from rlaif.stages import derive_seed
from rlaif.train.rollout import RolloutPrompt, Rollouts

REQUEST_TIMEOUT_S = 600.0
RETRIES = 3  # per request, on a dropped connection or a 5xx, with a pause between
IN_FLIGHT = 64


class VLLMRolloutSampler:
    """Samples rollouts on a vLLM server at ``url`` (``http://host:port/v1``) and pushes the policy to it."""

    def __init__(self, url: str, stage_dir: Path, *, lora: bool, api_key: str = "EMPTY",
                 timeout_s: float = REQUEST_TIMEOUT_S):
        from rlaif.engines.openai_engine import openai_http_library

        # The HTTP library openai itself is built on (httpx2 for openai 3.x): a declared dependency's own.
        httpx = self._lib = openai_http_library()
        self.url = url.rstrip("/")
        self.root = self.url.removesuffix("/v1")
        self.stage_dir = Path(stage_dir)
        self.lora = lora
        self._http = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {api_key}"},
                                  limits=httpx.Limits(max_connections=IN_FLIGHT))
        self.base_name = self._served_model()
        self.model_name = self.base_name  # what rollouts ask for: the base, or the newest adapter
        self.pushes = 0
        self.push_seconds = 0.0

    def close(self) -> None:
        """Unload the newest adapter and delete the pushed files (the server reads an adapter's on demand)."""
        if self.lora and self.model_name != self.base_name:
            self._post("/v1/unload_lora_adapter", {"lora_name": self.model_name}, root=True, check=False)
            self.model_name = self.base_name
        self._http.close()
        shutil.rmtree(self.stage_dir, ignore_errors=True)

    # --- weights -------------------------------------------------------------------------------------------

    def push(self, lm: Any, step: int) -> float:
        """Make the server sample from ``lm``'s current weights (after update ``step``); returns the seconds."""
        started = time.perf_counter()
        folder = self.stage_dir / f"step-{step:06d}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        if self.lora:
            self._push_adapter(lm, folder, step)
        else:
            self._push_weights(lm, folder)
        for old in sorted(self.stage_dir.glob("step-*")):
            if old != folder:  # no request asks for it any more; only the newest stays on disk
                shutil.rmtree(old, ignore_errors=True)
        seconds = time.perf_counter() - started
        self.pushes += 1
        self.push_seconds += seconds
        return seconds

    def _push_adapter(self, lm: Any, folder: Path, step: int) -> None:
        if not hasattr(lm, "peft_config"):
            raise EngineError("LoRA pushes need a policy trained with LoRA adapters")
        lm.save_pretrained(folder)
        name = f"policy-{step:06d}"
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder.resolve())}, root=True)
        previous, self.model_name = self.model_name, name
        if previous != self.base_name:
            self._post("/v1/unload_lora_adapter", {"lora_name": previous}, root=True, check=False)

    def _push_weights(self, lm: Any, folder: Path) -> None:
        lm.save_pretrained(folder, safe_serialization=True)
        self._post("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(folder.resolve())}},
                   root=True)
        self._post("/reset_prefix_cache", None, root=True)

    # --- rollouts ------------------------------------------------------------------------------------------

    def sample(self, prompts: Sequence[RolloutPrompt], *, k: int, max_new_tokens: int, temperature: float,
               eos_ids: Sequence[int], seed: int, tokenizer: Any) -> Rollouts:
        """K responses to each prompt, one request per response, all in flight at once; as ``sample_rollouts``."""
        started = time.perf_counter()
        queries = [(p, j) for p in prompts for j in range(k)]

        def one(index: int) -> list[int]:
            prompt, _ = queries[index]
            body = {"model": self.model_name, "prompt": list(prompt.ids), "max_tokens": max_new_tokens,
                    "temperature": temperature, "top_p": 1.0, "top_k": -1, "seed": derive_seed(seed, index),
                    "stop_token_ids": list(eos_ids), "return_token_ids": True, "skip_special_tokens": False}
            choice = self._post("/completions", body)["choices"][0]
            return response_ids(choice, eos_ids)

        with ThreadPoolExecutor(max_workers=min(IN_FLIGHT, max(1, len(queries)))) as pool:
            responses = list(pool.map(one, range(len(queries))))
        ended = [bool(r) and r[-1] in eos_ids for r in responses]
        texts = tokenizer.batch_decode([r[:-1] if e else r for r, e in zip(responses, ended)],
                                       skip_special_tokens=True)
        return Rollouts(list(prompts), k, responses, ended, texts, time.perf_counter() - started,
                        extra={"sampler": "vllm", "model": self.model_name})

    # --- HTTP ----------------------------------------------------------------------------------------------

    def _served_model(self) -> str:
        httpx = self._lib
        try:
            listed = self._http.get(self.url + "/models").json()
        except (httpx.HTTPError, ValueError) as exc:
            raise EngineError(f"no vLLM server answers at {self.url} ({type(exc).__name__}); start one with "
                              "`rlaif serve` (setting serve_weight_updates=true) or give --rollout-url") from None
        names = [m["id"] for m in listed.get("data", []) if not m.get("parent")]  # adapters name a parent
        if not names:
            raise EngineError(f"the server at {self.url} serves no model")
        return str(names[0])

    def _post(self, path: str, body: dict | None, *, root: bool = False, check: bool = True) -> Any:
        """POST with a bounded number of retries on a dropped connection or a 5xx; a 4xx fails at once."""
        httpx = self._lib
        url = (self.root if root else self.url) + path
        for attempt in range(RETRIES + 1):
            try:
                reply = self._http.post(url, json=body)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if reply.status_code < 400:
                    return reply.json() if reply.content and "json" in reply.headers.get("content-type", "") else {}
                problem = f"HTTP {reply.status_code}: {reply.text[:300]}"
                if reply.status_code < 500:
                    break
            if attempt < RETRIES:
                time.sleep(1.0 + attempt)
        if not check:
            return {}
        hint = ""
        if path in ("/v1/load_lora_adapter", "/collective_rpc", "/reset_prefix_cache"):
            hint = (" (the server must allow weight updates: `rlaif serve` with serve_weight_updates=true, or "
                    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, VLLM_SERVER_DEV_MODE=1 and --enable-lora)")
        raise EngineError(f"vLLM server {url}: {problem}{hint}")


def response_ids(choice: dict, eos_ids: Sequence[int]) -> list[int]:
    """A completion choice's generated ids, ending with the stop token when it stopped on one.

    vLLM reports the matched stop token as ``stop_reason`` and may leave it out of ``token_ids``; the trainer
    needs it in the response (its log-prob is part of the loss, and ``ended`` is read from it).
    """
    ids = [int(t) for t in choice.get("token_ids") or []]
    stop = choice.get("stop_reason")
    if choice.get("finish_reason") == "stop" and (not ids or ids[-1] not in eos_ids):
        ids.append(int(stop) if isinstance(stop, int) else int(eos_ids[0]))
    for j, token in enumerate(ids):
        if token in eos_ids:
            return ids[: j + 1]
    return ids
