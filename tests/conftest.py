"""Shared fixtures. Nothing here touches the network: models and servers are local, hubs are off."""

from __future__ import annotations

import os

from rlaif.environment import prepare_environment

# Tests share a machine with other work: give Prefect's temporary server longer than users need (the wait ends as
# soon as it answers; subprocesses such as `rlaif demo` inherit it). Set before prepare_environment's default.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")
prepare_environment()  # before any model library is imported by a test module

import pytest  # noqa: E402
from vllm_fixtures import vllm_server  # noqa: E402,F401  one real vLLM server per session, shared by all modules

from rlaif.constitution import load_constitution, resolve_constitution  # noqa: E402
from rlaif.engines.fake import FakeEngine  # noqa: E402


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="session")
def harmless():
    return load_constitution(resolve_constitution("harmless"))


@pytest.fixture(scope="session")
def example_constitution():
    return load_constitution(resolve_constitution("example"))


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Settings pointing at a fresh database in tmp_path, fake engine, no rlaif.toml from the cwd."""
    from rlaif.config import load_settings

    monkeypatch.setenv("RLAIF_CONFIG", str(tmp_path / "absent.toml"))
    for name in list(os.environ):
        if name.startswith("RLAIF_") and name not in ("RLAIF_CONFIG", "RLAIF_SERVE_PYTHON"):
            monkeypatch.delenv(name)
    return load_settings(db=tmp_path / "test.duckdb", engine="fake")


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for every flow test of the session (~7 s once, ~1 s a flow after)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):  # None: the environment's timeout, above
        yield


@pytest.fixture
def store(tmp_path):
    """A freshly migrated store on a real DuckDB file in tmp_path (modules with a store of their own override it)."""
    from rlaif.store import Store

    s = Store(tmp_path / "rlaif.duckdb")
    s.migrate()
    return s


@pytest.fixture
def server():
    """A fake OpenAI-compatible server on loopback (tests/openai_fakes.py), closed after the test."""
    from openai_fakes import FakeServer

    fake = FakeServer()
    yield fake
    fake.close()


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: on a shared 2-core machine a second thread spins against the other processes'
    load (a tiny-model step measured 40x slower with 2 threads than with 1 at a load of 12; a SmolLM2 DPO test
    52 s against 200 s). Modules that train use it with ``pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny random-init Llama (tests/tiny_model.py) in a folder, made once per module that asks for it."""
    from tiny_model import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))
