"""TRL's trainers read the `trl` exports as intended: each export is loaded with `datasets`, trained for two steps by
TRL 1.16's SFTTrainer, DPOTrainer, KTOTrainer or RewardTrainer on the tiny random-init chat model (offline, CPU,
fp32, no gradient checkpointing), and the token ids the model was given are decoded: every row's every turn is
there in the chat template's form (``<|im_start|>role\\ncontent<|im_end|>``), the system turn included.

Rows are few and batches large enough that two steps see every row once (TRL's random sampler, one epoch)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from export_rows import make_export_db

from rlaif.exports import export_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")
START, END = "<|im_start|>", "<|im_end|>"  # tests/tiny_model.py's ChatML template


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export_db(tmp_path_factory.mktemp("export-trl") / "rlaif.duckdb")


def exported(db: Path, dataset: str, out: Path):
    """The export as a user loads it: a Parquet file read by ``datasets``."""
    from datasets import Dataset

    export_dataset(db, dataset, out / f"{dataset}.parquet")
    return Dataset.from_parquet(str(out / f"{dataset}.parquet"), cache_dir=str(out / "hf-cache"))


def common(out: Path, batch: int) -> dict:
    """Training arguments every trainer shares: two steps on CPU in fp32, nothing saved or reported."""
    return {"output_dir": str(out / "trainer"), "max_steps": 2, "per_device_train_batch_size": batch,
            "learning_rate": 1e-3, "bf16": False, "fp16": False, "gradient_checkpointing": False, "use_cpu": True,
            "report_to": "none", "save_strategy": "no", "logging_strategy": "no", "disable_tqdm": True,
            "dataloader_num_workers": 0, "seed": 0}


def record_inputs(model: torch.nn.Module) -> list[list[int]]:
    """Every input_ids row the model's forward gets, kept as lists (a forward pre-hook)."""
    seen: list[list[int]] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.extend(ids.tolist())

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def rendered(turn: dict) -> str:
    return f"{START}{turn['role']}\n{turn['content']}{END}"


def assert_templated(tokenizer, seen: list[list[int]], conversations: list[list[dict]]) -> None:
    """Each conversation's every turn reached the model inside one sequence, in the chat template's form."""
    assert seen and conversations
    texts = [tokenizer.decode(ids, skip_special_tokens=False) for ids in seen]
    for turns in conversations:
        assert turns and any(all(rendered(t) in text for t in turns) for text in texts), turns
    assert any(f"{START}system\n" in text for text in texts)  # the system turn was not dropped


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters() if p.requires_grad])


def test_sft_trainer_trains_on_the_conversations_through_the_template(db: Path, tmp_path: Path,
                                                                      tiny_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    ds = exported(db, "sft", tmp_path)
    tok, model = AutoTokenizer.from_pretrained(tiny_dir), AutoModelForCausalLM.from_pretrained(tiny_dir)
    trainer = SFTTrainer(model=model, args=SFTConfig(**common(tmp_path, 2), max_length=512), train_dataset=ds,
                         processing_class=tok)
    seen, before = record_inputs(model), weights(model)
    trainer.train()
    assert_templated(tok, seen, [row["messages"] for row in ds])
    assert not torch.equal(before, weights(model))


def test_dpo_trainer_reads_prompt_chosen_and_rejected_through_the_template(db: Path, tmp_path: Path,
                                                                           tiny_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    ds = exported(db, "prefs", tmp_path)
    tok, model = AutoTokenizer.from_pretrained(tiny_dir), AutoModelForCausalLM.from_pretrained(tiny_dir)
    trainer = DPOTrainer(model=model, args=DPOConfig(**common(tmp_path, 3), max_length=512), train_dataset=ds,
                         processing_class=tok)
    seen, before = record_inputs(model), weights(model)
    trainer.train()
    assert_templated(tok, seen, [row["prompt"] + row["chosen"] for row in ds] +
                     [row["prompt"] + row["rejected"] for row in ds])
    assert not torch.equal(before, weights(model))


def test_kto_trainer_reads_prompt_completion_and_label_through_the_template(db: Path, tmp_path: Path,
                                                                            tiny_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    ds = exported(db, "kto", tmp_path)
    assert set(ds["label"]) == {True, False}
    tok, model = AutoTokenizer.from_pretrained(tiny_dir), AutoModelForCausalLM.from_pretrained(tiny_dir)
    trainer = KTOTrainer(model=model, args=KTOConfig(**common(tmp_path, 4), max_length=512), train_dataset=ds,
                         processing_class=tok)
    seen, before = record_inputs(model), weights(model)
    trainer.train()
    assert_templated(tok, seen, [row["prompt"] + row["completion"] for row in ds])
    assert not torch.equal(before, weights(model))


def test_reward_trainer_scores_whole_conversations_through_the_template(db: Path, tmp_path: Path,
                                                                        tiny_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    ds = exported(db, "rm", tmp_path)
    assert "margin" not in ds.column_names  # RewardTrainer would subtract it inside its loss
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_dir, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    trainer = RewardTrainer(model=model, args=RewardConfig(**common(tmp_path, 3), max_length=512), train_dataset=ds,
                            processing_class=tok)
    assert "margin" not in trainer.train_dataset.column_names
    seen, before = record_inputs(model), weights(model)
    trainer.train()
    assert_templated(tok, seen, list(ds["chosen"]) + list(ds["rejected"]))
    assert not torch.equal(before, weights(model))
