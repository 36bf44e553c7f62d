"""Model loading for training: device and precision, LoRA, the scalar-head reward model, servable folders.

A reward model is saved as a transformers ``AutoModelForSequenceClassification`` folder (``num_labels=1``, the
head as its ``score`` layer, the normalisation statistics in its config as ``reward_mean``/``reward_std``), so
transformers, TRL, OpenRLHF and vLLM's classification pooling load it as it is. Folders of the earlier layout (the
base model, ``reward_head.safetensors`` and the statistics in ``reward_model.json``) still load.

Precision: on CUDA a run trains in bf16 *autocast* over fp32 weights (``accelerate``'s mixed precision); frozen
models (a reference, a reward model scoring rollouts) load in bf16 outright. On CPU everything is fp32: CPUs here
lack fast bf16 matmuls, and the engines generate in fp32 on CPU too. Trainable weights stay fp32 even on a GPU
because AdamW's updates at DPO's learning rates (1e-6 of a weight) fall below bf16's 8-bit mantissa.

The saved model is a plain transformers ``save_pretrained`` folder with its tokenizer, chat template and generation
config, LoRA merged in, so ``RLAIF_MODEL=/that/folder`` loads it in the transformers engine and vLLM serves it.

torch is imported at the top (nothing in ``rlaif`` imports this module at module level); transformers and
peft inside the functions that use them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rlaif.environment import prepare_environment
from rlaif.errors import ConfigError
from rlaif.models import swap_into_place

if TYPE_CHECKING:
    from rlaif.train.options import LoraOptions

REWARD_HEAD_FILE = "reward_head.safetensors"
REWARD_META_FILE = "reward_model.json"
TRAIN_META_FILE = "rlaif_train.json"  # written into every saved model: base model, run id, step, kind


def quiet_transformers() -> None:
    """No progress bars or load reports on stdout: training output is the run's own lines."""
    prepare_environment()
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def select_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when torch sees a GPU, else CPU; asking for CUDA without one is a user error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but torch sees no CUDA GPU (use cpu or auto)")
    return torch.device(device)


def select_precision(device: torch.device, precision: str = "auto") -> str:
    """'bf16' or 'fp32': ``auto`` is bf16 on a CUDA GPU that supports it, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type != "cuda":
        raise ConfigError("precision bf16 needs a CUDA GPU here; CPU training runs in fp32 (use auto or fp32)")
    return precision


def frozen_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The dtype of a model that is only read (reference, reward scorer): bf16 under bf16, else fp32."""
    return torch.bfloat16 if precision == "bf16" and device.type == "cuda" else torch.float32


def load_tokenizer(path: Path) -> Any:
    """The model's tokenizer for training: right padding (positions need no care), a pad token always set."""
    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a tokenizer from {path}: {str(exc).splitlines()[0]}") from None
    if tokenizer.chat_template is None:
        raise ConfigError(f"{path} has no chat template; training renders conversations with the model's own")
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def end_of_turn_ids(path: Path, tokenizer: Any) -> list[int]:
    """The ids that end a reply, as the engines read them: the generation config's EOS id(s), else the tokenizer's."""
    from transformers import GenerationConfig

    try:
        configured = GenerationConfig.from_pretrained(path).eos_token_id
    except OSError:
        configured = None
    ids = configured if isinstance(configured, list) else [configured]
    ids = [int(i) for i in ids if i is not None] or [tokenizer.eos_token_id]
    if ids[0] is None:
        raise ConfigError(f"{path} defines no end-of-sequence token; cannot tell where a reply ends")
    return ids


def load_causal_lm(path: Path, *, dtype: torch.dtype | None = None, lora: LoraOptions | None = None,
                   gradient_checkpointing: bool = False, trainable: bool = True) -> Any:
    """A causal LM from a local folder: trainable in fp32 by default, or frozen (``trainable=False``) in ``dtype``."""
    quiet_transformers()
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a causal LM from {path}: {str(exc).splitlines()[0]}") from None
    if not trainable:
        model.requires_grad_(False)
        return model.eval()
    model.config.use_cache = False  # training never decodes; the cache only costs memory
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None:
        model = add_lora(model, lora, gradient_checkpointing=gradient_checkpointing)
    return model.train()


def add_lora(model: Any, options: LoraOptions, *, gradient_checkpointing: bool = False) -> Any:
    """Wrap ``model`` in peft LoRA adapters; only the adapters (and a reward head, if any) train."""
    from peft import LoraConfig, get_peft_model

    targets = options.target_modules if isinstance(options.target_modules, str) else list(options.target_modules)
    config = LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout, target_modules=targets,
                        bias="none")
    if gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    return get_peft_model(model, config)


def merged(model: Any) -> Any:
    """The plain transformers model: LoRA adapters merged into the weights, or the model itself."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def base_model_path(model: str, cache_dir: Path) -> Path:
    """The local folder of a training base model: the embedded model's converted folder, or a model folder."""
    from rlaif.config import load_settings
    from rlaif.errors import EngineError
    from rlaif.models import resolve_model_path

    try:
        return resolve_model_path(load_settings(model=model, cache_dir=cache_dir))
    except EngineError as exc:
        raise ConfigError(str(exc)) from None


# --- the reward model ------------------------------------------------------------------------------------------


class RewardModel(nn.Module):
    """A causal LM's decoder with a scalar head on the hidden state of each sequence's last real token.

    The last token of a (prompt, answer) sequence is the answer's end-of-turn token, which has attended to the
    whole exchange, as in the preference models of Ouyang et al. 2022 and Bai et al. 2022. ``mean`` and ``std``
    (saved with it) turn a raw reward into one with mean 0 and std 1 on its reference set.

    The head has no bias: the Bradley-Terry loss sees only reward differences, so a bias gets no gradient (it
    stayed at its initial 0 in the earlier layout, which had one); normalisation sets the offset. Without it the
    head is exactly the ``score`` layer of transformers' and vLLM's sequence-classification models.
    """

    def __init__(self, backbone: Any, mean: float = 0.0, std: float = 1.0, *, bias: bool = False):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1, bias=bias)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        if bias:
            nn.init.zeros_(self.head.bias)
        self.register_buffer("stats", torch.tensor([mean, std], dtype=torch.float32), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Raw rewards ``[B]`` of right-padded sequences."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(picked.to(self.head.weight.dtype)).squeeze(-1).float()

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """(raw - mean) / std with the reference set's statistics."""
        return (raw - self.stats[0]) / self.stats[1]

    def set_stats(self, mean: float, std: float) -> None:
        self.stats.copy_(torch.tensor([mean, std], dtype=torch.float32))


def new_reward_model(path: Path, *, lora: LoraOptions | None = None, gradient_checkpointing: bool = False) -> Any:
    """A reward model to train: the causal LM's decoder from ``path`` and a freshly initialised head."""
    quiet_transformers()
    from transformers import AutoModel

    try:
        backbone = AutoModel.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a model from {path}: {str(exc).splitlines()[0]}") from None
    backbone.config.use_cache = False
    if gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None:
        backbone = add_lora(backbone, lora, gradient_checkpointing=gradient_checkpointing)
    return RewardModel(backbone).train()


def load_reward_model(path: Path, *, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Any:
    """A saved reward model (either layout, see the module docstring), frozen, with its normalisation statistics."""
    quiet_transformers()
    path = Path(path)
    meta_path = path / REWARD_META_FILE
    if not meta_path.is_file():
        raise ConfigError(f"{path} is not a reward model folder (no {REWARD_META_FILE}); train one with rlaif train rm")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if (path / REWARD_HEAD_FILE).is_file():
        model = _load_head_layout(path, meta, dtype or torch.float32)
    else:
        model = _load_classifier_layout(path, dtype or torch.float32)
    model.requires_grad_(False)
    model.meta = meta
    return model.to(device or torch.device("cpu")).eval()


def _load_head_layout(path: Path, meta: dict, dtype: torch.dtype) -> RewardModel:
    """The earlier layout: the base model, ``reward_head.safetensors`` (weight and bias), stats in the JSON."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(path, dtype=dtype)
    head = load_file(path / REWARD_HEAD_FILE)
    model = RewardModel(backbone, mean=meta["mean"], std=meta["std"], bias="bias" in head)
    model.head.load_state_dict(head)
    model.head.to(dtype)
    return model


def _load_classifier_layout(path: Path, dtype: torch.dtype) -> RewardModel:
    """A sequence-classification folder: its decoder and ``score`` layer, the stats from its config."""
    from transformers import AutoModelForSequenceClassification

    try:
        classifier = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a reward model from {path}: {str(exc).splitlines()[0]}") from None
    config = classifier.config
    if config.num_labels != 1 or getattr(config, "reward_std", None) is None:
        raise ConfigError(f"{path}: expected a reward model (num_labels 1, reward_mean/reward_std in config.json)")
    model = RewardModel(classifier.base_model, mean=config.reward_mean, std=config.reward_std)
    model.head.weight.data.copy_(classifier.score.weight.data)
    model.head.to(dtype)
    return model


# --- saving ----------------------------------------------------------------------------------------------------


def save_model_folder(model: Any, tokenizer: Any, out: Path, *, meta: dict[str, Any],
                      state_dict: dict | None = None) -> Path:
    """Write a servable folder at ``out`` atomically: weights (LoRA merged), tokenizer, chat template, metadata.

    Written under a temporary name beside ``out`` and renamed when complete, so a crash never leaves a folder that
    looks finished. ``state_dict`` is the full state gathered by accelerate under FSDP/DeepSpeed, else None.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        merged(model).save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        (tmp / TRAIN_META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def save_reward_model(model: Any, tokenizer: Any, out: Path, *, meta: dict[str, Any],
                      end_of_turn: list[int] | None = None) -> Path:
    """Write a reward model folder: ``AutoModelForSequenceClassification`` weights and config (LoRA merged, the
    statistics in the config), the tokenizer, and ``reward_model.json`` (run, step, options, statistics)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    mean, std = (float(v) for v in model.stats.tolist())
    try:
        classifier = as_sequence_classifier(model, mean, std)
        pad = pooling_pad_id(tokenizer, end_of_turn or [tokenizer.eos_token_id])
        classifier.config.pad_token_id = pad
        tokenizer = _with_pad(tokenizer, pad)
        classifier.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / REWARD_META_FILE).write_text(json.dumps({**meta, "mean": mean, "std": std}, indent=2, default=str)
                                            + "\n", encoding="utf-8")
        swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def as_sequence_classifier(model: RewardModel, mean: float, std: float) -> Any:
    """The reward model as transformers' ``...ForSequenceClassification`` of its decoder (num_labels 1, head as
    ``score``), with ``reward_mean``/``reward_std`` in its config: normalised = (logit - mean) / std."""
    from transformers import AutoModelForSequenceClassification

    backbone = merged(model.backbone)
    config = backbone.config.__class__.from_dict(backbone.config.to_dict())
    config.architectures = None
    config.num_labels = 1
    config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
    config.problem_type = "regression"
    if model.head.bias is not None:  # a model of the earlier layout: fold its (zero-gradient) bias into the mean
        mean -= float(model.head.bias)
    config.reward_mean, config.reward_std = mean, std
    config.reward_normalisation = "(score - reward_mean) / reward_std"
    config.use_cache = True
    with torch.device("meta"):
        classifier = AutoModelForSequenceClassification.from_config(config)
    if not isinstance(getattr(classifier, "score", None), nn.Linear):
        raise ConfigError(f"{type(classifier).__name__} has no linear `score` head; cannot save this reward model "
                          "as a sequence classifier")
    classifier.to_empty(device="cpu")
    getattr(classifier, classifier.base_model_prefix).load_state_dict(backbone.state_dict())
    classifier.score.weight.data.copy_(model.head.weight.detach().float().cpu())
    return classifier.float()


def pooling_pad_id(tokenizer: Any, end_of_turn: list[int]) -> int | None:
    """A pad id that never ends a sequence: transformers' classifier reads the last token that is *not* the pad id,
    so a pad equal to the end-of-turn token (SmolLM2's) would move the reward to the token before it. None when
    the tokenizer offers no such token (then transformers scores only unpadded batches)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.unk_token_id):
        if candidate is not None and candidate not in end_of_turn:
            return int(candidate)
    return None


def _with_pad(tokenizer: Any, pad: int | None) -> Any:
    if pad is None or pad == tokenizer.pad_token_id:
        return tokenizer
    import copy

    saved = copy.deepcopy(tokenizer)
    saved.pad_token = saved.convert_ids_to_tokens(pad)
    return saved


def read_train_meta(path: Path) -> dict[str, Any]:
    """The metadata a trained model folder carries (empty for a model rlaif did not train)."""
    meta = Path(path) / TRAIN_META_FILE
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
