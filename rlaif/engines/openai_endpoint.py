"""Talking to an OpenAI-compatible server without the client library: model discovery and vLLM's metrics.

Plain ``urllib``, so ``rlaif serve`` can wait for health and the benchmark can read counters without importing
``openai``.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

from rlaif.engines.base import one_line
from rlaif.errors import EngineError


class _Unreachable(EngineError):
    """Nothing answers at the URL (yet): connection refused, DNS failure, timeout or a 5xx while starting."""


def list_models(base_url: str, api_key: str = "EMPTY", timeout: float = 10.0) -> list[str]:
    """The model names an OpenAI-compatible server serves (``GET {base_url}/models``); one try."""
    url = base_url.rstrip("/") + "/models"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.load(response)
    except urllib.error.HTTPError as exc:
        message = f"{url} answered HTTP {exc.code}: {one_line(exc.read().decode('utf-8', 'replace'))}"
        raise (_Unreachable if exc.code >= 500 else EngineError)(message) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Unreachable(
            f"no OpenAI-compatible server at {base_url} ({one_line(str(reason))}); start one with `rlaif serve`"
        ) from None
    except ValueError as exc:
        raise EngineError(f"{url} did not answer JSON: {one_line(str(exc))}") from None
    try:
        return [str(m["id"]) for m in payload["data"]]
    except (KeyError, TypeError):
        raise EngineError(f"{url} answered without a model list: {one_line(str(payload))}") from None


def wait_for_models(base_url: str, api_key: str = "EMPTY", *, wait_s: float = 5.0, poll_s: float = 0.5) -> list[str]:
    """``list_models``, retried while the server is unreachable for at most ``wait_s`` (it may be starting)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return list_models(base_url, api_key, timeout=max(1.0, min(10.0, wait_s)))
        except _Unreachable:
            if time.monotonic() + poll_s > deadline:
                raise
        time.sleep(poll_s)


PREFIX_CACHE_METRICS = {
    "queries": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),  # new, then old name
    "hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
}


def prefix_cache_stats(base_url: str, timeout: float = 5.0) -> dict[str, float | None]:
    """Prefix-cache counters from vLLM's Prometheus ``/metrics`` (counted in tokens, summed over engines).

    Critique and judge prompts share long constitution prefixes, so the hit rate says whether vLLM's prefix
    caching is paying off. Fields are None when the server has no such metrics (or none at all).
    """
    root = re.sub(r"/v1/?$", "", base_url.rstrip("/"))
    try:
        with urllib.request.urlopen(root + "/metrics", timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        text = ""
    stats: dict[str, float | None] = {}
    for field, names in PREFIX_CACHE_METRICS.items():
        stats[field] = next((v for v in (_metric_sum(text, n) for n in names) if v is not None), None)
    hits, queries = stats["hits"], stats["queries"]
    stats["hit_rate"] = hits / queries if hits is not None and queries else None
    return stats


def _metric_sum(text: str, name: str) -> float | None:
    """Sum of a Prometheus metric over its label sets, or None when it is absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None
