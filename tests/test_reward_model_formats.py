"""A trained reward model is a plain ``AutoModelForSequenceClassification`` folder: transformers loads it and gives
the scores ``rlaif score`` gives (normalised with the statistics in its config), also when the base tokenizer pads
with its end-of-turn token (SmolLM2 does); a folder of the earlier layout (base model + ``reward_head.safetensors``
+ stats JSON) still loads and scores as before, and converts to the new layout with the same normalised scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import crafted_store

from rlaif.train.data import completion_ids, prompt_ids
from rlaif.train.models import REWARD_HEAD_FILE, REWARD_META_FILE, RewardModel, load_reward_model, save_reward_model
from rlaif.train.options import RewardOptions
from rlaif.train.reward_model import RewardScorer, train_reward_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def eos_padded_dir(tiny_dir, tmp_path_factory) -> Path:
    """The tiny model with SmolLM2's tokenizer habit: the pad token is the end-of-turn token."""
    folder = tmp_path_factory.mktemp("eos-pad") / "tiny"
    shutil.copytree(tiny_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["pad_token"] = "<|im_end|>"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def trained(eos_padded_dir, tmp_path_factory) -> tuple[Path, object]:
    store = crafted_store(tmp_path_factory.mktemp("db") / "rm.duckdb", pairs=16)
    options = RewardOptions(lr=5e-4, batch_size=4, micro_batch_size=4, max_steps=6, save_every=0)
    result = train_reward_model(store, options=options, base_model="tiny", base_path=eos_padded_dir,
                                out_dir=tmp_path_factory.mktemp("rm"), device="cpu", log=lambda _: None)
    return Path(result.final_path), store


def conversations(store) -> tuple[list[list[dict]], list[str]]:
    rows = store.fetch("SELECT p.messages, d.chosen, d.rejected FROM preference_dataset d JOIN prompts p "
                       "USING (prompt_id) ORDER BY prompt_id")
    assert len(rows) >= 8
    return ([r["messages"] for r in rows for _ in (0, 1)], [t for r in rows for t in (r["chosen"], r["rejected"])])


def test_transformers_loads_the_reward_model_and_gives_rlaif_scores(trained):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder, store = trained
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["id2label"] == {"0": "reward"}
    assert config["reward_std"] > 0 and not (folder / REWARD_HEAD_FILE).exists()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert config["pad_token_id"] == tokenizer.pad_token_id != tokenizer.convert_tokens_to_ids("<|im_end|>")

    scorer = RewardScorer(folder, device="cpu")  # what `rlaif score` runs
    messages, answers = conversations(store)
    normalised, raw = scorer.score(messages, answers)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    seqs = [prompt_ids(tokenizer, m) + completion_ids(tokenizer, m, a, end_of_turn=scorer.end_of_turn)
            for m, a in zip(messages, answers)]
    assert all(s[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>") for s in seqs)  # scored at the end of turn
    batch = tokenizer.pad({"input_ids": seqs}, return_tensors="pt")  # one padded batch, as a user would run it
    with torch.inference_mode():
        logits = classifier(**batch).logits.squeeze(-1)
    assert logits.tolist() == pytest.approx(raw, abs=1e-4)
    theirs = (logits - config["reward_mean"]) / config["reward_std"]
    assert theirs.tolist() == pytest.approx(normalised, abs=1e-4)
    assert len(set(round(x, 3) for x in normalised)) > 4  # distinct scores, not one constant


def write_old_layout(model: RewardModel, tokenizer, folder: Path, meta: dict) -> None:
    """The layout rlaif saved before: the base model, the head with its bias, the stats in reward_model.json."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    model.backbone.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, folder / REWARD_HEAD_FILE)
    mean, std = model.stats.tolist()
    (folder / REWARD_META_FILE).write_text(json.dumps({**meta, "mean": mean, "std": std}))


def test_an_old_checkpoint_still_loads_scores_and_converts_with_the_same_normalised_scores(trained, tmp_path):
    from transformers import AutoModel

    folder, store = trained
    meta = json.loads((folder / REWARD_META_FILE).read_text())
    new = load_reward_model(folder)
    old = RewardModel(AutoModel.from_pretrained(folder), mean=0.25, std=2.0, bias=True)
    with torch.no_grad():
        old.head.weight.copy_(new.head.weight)
        old.head.bias.fill_(0.5)  # nonzero, to see it folded into the mean on conversion
    old_dir = tmp_path / "old"
    write_old_layout(old, RewardScorer(folder).tokenizer, old_dir, meta)

    scorer = RewardScorer(old_dir, device="cpu")
    messages, answers = conversations(store)
    normalised, raw = scorer.score(messages, answers)
    ref_norm, ref_raw = RewardScorer(folder, device="cpu").score(messages, answers)
    assert raw == pytest.approx([r + 0.5 for r in ref_raw], abs=1e-4)  # the same weights plus the bias
    assert normalised == pytest.approx([(r + 0.5 - 0.25) / 2.0 for r in ref_raw], abs=1e-4)

    converted = save_reward_model(scorer.model, scorer.tokenizer, tmp_path / "converted", meta=meta)
    again, _ = RewardScorer(converted, device="cpu").score(messages, answers)
    assert again == pytest.approx(normalised, abs=1e-4)


def test_the_trained_folder_has_a_hub_model_card_with_its_data_metrics_and_win_rate(trained):
    from ruamel.yaml import YAML

    from rlaif.store import utcnow
    from rlaif.train.model_card import write_model_card

    folder, store = trained
    text = (folder / "README.md").read_text()
    _, header, body = text.split("---\n", 2)
    meta = YAML(typ="safe").load(header)
    assert meta["library_name"] == "transformers" and meta["base_model"] == "tiny"
    assert meta["pipeline_tag"] == "text-classification" and "rm" in meta["tags"]
    (run,) = store.fetch("SELECT * FROM train_runs")
    assert f"version `{run['data_version']}` ({run['data_rows']} rows: {run['train_rows']} train" in body
    assert "soft-label Bradley-Terry" in body and "| lr | `0.0005` |" in body
    (loss,) = store.fetch("SELECT value FROM train_metrics WHERE phase = 'step' AND name = 'loss' AND step = 6")
    assert f"| step | 6 | loss | {loss['value']:.4g} |" in body
    assert "Not measured yet" in body

    row = {"eval_id": "e1", "run_id": "w1", "policy": str(folder.resolve()), "base": "tiny", "judge_model": "judge-m",
           "constitution_version": "c0ffee", "prompts_source": "p.jsonl", "split": "eval", "prompts": 12,
           "win_rate": 0.625, "win_rate_low": 0.5, "win_rate_high": 0.75, "lc_win_rate": 0.6, "wins": 7, "ties": 1,
           "losses": 4, "seed": 0, "params": "{}", "created_at": utcnow()}
    store.insert("winrate_evals", [row])
    write_model_card(store, folder)
    again = (folder / "README.md").read_text()
    assert "| `tiny` | `judge-m` (constitution c0ffee) | eval | 12 | 0.625 [0.5, 0.75] | 0.6 | 7/1/4 |" in again
