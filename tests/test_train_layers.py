"""The training layers the trainers and the RL trainers share: data, models, log-probs, tracking.

On the tiny random Llama of tests/tiny_model.py and a real DuckDB file of crafted rows (tests/train_helpers.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from tiny_model import make_tiny_model_dir
from train_helpers import crafted_store

from rlaif.engines.base import ChatRequest
from rlaif.errors import ConfigError
from rlaif.prompts import PromptRow
from rlaif.store import Store
from rlaif.train import data, tracking
from rlaif.train.logprobs import TokenLogps, gather_logps
from rlaif.train.models import (
    RewardModel,
    end_of_turn_ids,
    load_causal_lm,
    load_tokenizer,
    merged,
    save_model_folder,
    select_precision,
)
from rlaif.train.options import DpoOptions, LoraOptions, SftOptions, parse_options


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return load_tokenizer(tiny_dir)


@pytest.fixture(scope="module")
def end_of_turn(tiny_dir, tokenizer):
    return data.end_of_turn_strings(tokenizer, end_of_turn_ids(tiny_dir, tokenizer))


CONVERSATION = [{"role": "user", "content": "tell me a story"}, {"role": "assistant", "content": "the cat is red"}]


# --- the chat template, as at generation ----------------------------------------------------------------------


def test_prompt_ids_are_the_transformers_engines_own(tiny_dir, tokenizer):
    from rlaif.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(tiny_dir, model_name="tiny", device="cpu")
    request = ChatRequest("k", tuple(CONVERSATION[:1]))
    expected = engine._tokenizer(engine._render_chat(request), add_special_tokens=False)["input_ids"]
    assert data.prompt_ids(tokenizer, CONVERSATION[:1]) == expected


def test_the_loss_mask_covers_the_assistant_answer_and_its_end_of_turn_only(tokenizer, end_of_turn):
    ids, mask = data.encode_conversation(tokenizer, CONVERSATION, end_of_turn=end_of_turn)
    prompt = data.prompt_ids(tokenizer, CONVERSATION[:1])
    assert ids[: len(prompt)] == prompt and not any(mask[: len(prompt)])
    assert all(mask[len(prompt):])
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == "the cat is red<|im_end|>"
    assert data.completion_ids(tokenizer, CONVERSATION[:1], "the cat is red", end_of_turn=end_of_turn) == (
        ids[len(prompt):])


def test_train_on_all_masks_every_assistant_turn_and_nothing_else(tokenizer, end_of_turn):
    talk = [*CONVERSATION, {"role": "user", "content": "and the dog"}, {"role": "assistant", "content": "it is blue"}]
    ids, mask = data.encode_conversation(tokenizer, talk, end_of_turn=end_of_turn, train_on="all")
    spans, current = [], []
    for token, m in zip(ids, mask):
        if m:
            current.append(token)
        elif current:
            spans, current = [*spans, current], []
    spans.append(current)
    assert [tokenizer.decode(s) for s in spans] == ["the cat is red<|im_end|>", "it is blue<|im_end|>"]
    full = tokenizer.apply_chat_template(talk, tokenize=False)
    assert tokenizer.decode(ids) == full.rstrip("\n")  # the same text the template renders, minus the last newline
    last_only, last_mask = data.encode_conversation(tokenizer, talk, end_of_turn=end_of_turn)
    assert last_only == ids and sum(last_mask) == len(spans[1])


@pytest.mark.real_model
def test_smollm2_template_with_its_default_system_prompt():
    from rlaif.models import prepare_embedded_model

    folder = prepare_embedded_model(Path.home() / ".cache" / "rlaif")
    tok = load_tokenizer(folder)
    eot = data.end_of_turn_strings(tok, end_of_turn_ids(folder, tok))
    ids, mask = data.encode_conversation(tok, CONVERSATION, end_of_turn=eot)
    assert tok.decode([t for t, m in zip(ids, mask) if m]) == "the cat is red<|im_end|>"
    assert "SmolLM" in tok.decode(ids[: mask.index(1)])  # the injected system prompt stays in the context


# --- rows, splits and versions --------------------------------------------------------------------------------


def test_rows_carry_the_prompts_tables_split(tmp_path):
    store = crafted_store(tmp_path / "t.duckdb", pairs=40)
    rows = data.read_preference_rows(store)
    assert len(rows) == 40
    stored = {r["prompt_id"]: r["split"] for r in store.fetch("SELECT prompt_id, split FROM prompts")}
    assert all(r["split"] == stored[r["prompt_id"]] == PromptRow(r["prompt_id"], ()).split for r in rows)
    train, evals = data.by_split(rows)
    assert evals and train and len(train) + len(evals) == 40
    assert {r["key"] for r in data.read_sft_rows(store)} == {f"chain{i:03d}" for i in range(40)}
    assert len(data.read_sft_rows(store, rounds="all")) == 40  # one round each, read from revisions


def test_an_empty_view_is_one_clear_line(tmp_path):
    store = Store(tmp_path / "empty.duckdb")
    store.migrate()
    with pytest.raises(ConfigError, match=r"^preference_dataset in .* is empty; generate judged pairs first"):
        data.read_preference_rows(store)


def test_dataset_version_is_the_set_of_keys_and_its_count():
    a = data.dataset_version(["k2", "k1", "k1"])
    assert a == data.dataset_version(["k1", "k2"]) and a.rows == 2
    assert data.dataset_version(["k1", "k2", "k3"]).hash != a.hash


# --- batches --------------------------------------------------------------------------------------------------


def test_batch_plan_is_full_deterministic_and_covers_each_epoch():
    rng = random.Random(1)
    lengths = [rng.randint(5, 300) for _ in range(37)]
    plan = data.batch_plan(lengths, 8, steps=10, seed=3)
    assert len(plan) == 10 and all(len(b) == 8 for b in plan)
    first_epoch = plan[: data.steps_per_epoch(37, 8)]
    assert {i for b in first_epoch for i in b} == set(range(37))
    assert plan == data.batch_plan(lengths, 8, steps=10, seed=3) != data.batch_plan(lengths, 8, steps=10, seed=4)
    assert all(lengths[b[0]] >= lengths[b[-1]] for b in plan)  # longest first, so ranks get similar shares
    assert sorted(data.rank_rows(plan[0], 0, 2) + data.rank_rows(plan[0], 1, 2)) == sorted(plan[0])


def test_bucketing_pads_far_less_than_random_batches():
    rng = random.Random(0)
    lengths = [rng.randint(10, 500) for _ in range(512)]

    def padding(batches):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    bucketed = data.batch_plan(lengths, 8, steps=64, seed=0)
    order = list(range(512))
    random.Random(0).shuffle(order)
    unbucketed = [order[i : i + 8] for i in range(0, 512, 8)]
    assert padding(bucketed) < 0.2 * padding(unbucketed)


def test_pair_batch_puts_chosen_then_rejected_with_completion_masks():
    pairs = [data.PairExample("a", [1, 2], [3, 4, 5], [6], 0.8), data.PairExample("b", [1], [7], [8, 9], 0.6)]
    ids, attention, mask = data.pair_batch(pairs, pad=0)
    assert ids.tolist() == [[1, 2, 3, 4, 5], [1, 7, 0, 0, 0], [1, 2, 6, 0, 0], [1, 8, 9, 0, 0]]
    assert mask.tolist() == [[0, 0, 1, 1, 1], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 1, 0, 0]]
    assert attention.sum(dim=1).tolist() == [5, 2, 3, 3]


# --- models and log-probs -------------------------------------------------------------------------------------


def test_precision_is_fp32_on_cpu_and_bf16_needs_a_gpu():
    assert select_precision(torch.device("cpu"), "auto") == "fp32"
    with pytest.raises(ConfigError, match="bf16 needs a CUDA GPU"):
        select_precision(torch.device("cpu"), "bf16")


def test_token_logps_equal_a_full_log_softmax_and_ignore_padding(tiny_dir):
    lm = load_causal_lm(tiny_dir, trainable=False)
    ids = torch.tensor([[5, 9, 14, 3, 7], [5, 9, 14, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    with torch.no_grad():
        got = TokenLogps(lm)(ids, attention, mask)
        full = lm(input_ids=ids, attention_mask=attention).logits.float().log_softmax(-1)
    expected = torch.zeros_like(got)
    expected[:, 1:] = full[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]
    assert torch.allclose(got, expected, atol=1e-5)
    assert gather_logps(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item() == pytest.approx(-0.6931, abs=1e-4)


def test_lora_trains_adapters_only_and_merges_into_a_servable_folder(tiny_dir, tokenizer, tmp_path):
    model = load_causal_lm(tiny_dir, lora=LoraOptions(r=4, alpha=8))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # move the adapters so merging has something to merge
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    ids = torch.tensor([[5, 9, 14, 3]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    folder = save_model_folder(model, tokenizer, tmp_path / "final", meta={"kind": "test"})
    reloaded = load_causal_lm(folder, trainable=False)
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, before, atol=1e-4)
    assert not any("lora" in k for k in reloaded.state_dict())
    assert json.loads((folder / "rlaif_train.json").read_text())["kind"] == "test"
    assert load_tokenizer(folder).chat_template == tokenizer.chat_template
    assert merged(reloaded) is reloaded


def test_reward_is_read_at_the_last_real_token_whatever_the_padding(tiny_dir):
    from transformers import AutoModel

    model = RewardModel(AutoModel.from_pretrained(tiny_dir)).eval()
    short = torch.tensor([[5, 9, 14]])
    padded = torch.tensor([[5, 9, 14, 0, 0]])
    with torch.no_grad():
        a = model(short, torch.ones_like(short))
        b = model(padded, torch.tensor([[1, 1, 1, 0, 0]]))
    assert torch.allclose(a, b, atol=1e-5)
    model.set_stats(float(a), 2.0)
    assert model.normalise(a).item() == pytest.approx(0.0, abs=1e-6)


# --- options --------------------------------------------------------------------------------------------------


def test_bad_options_are_one_line_with_the_numbers():
    with pytest.raises(ConfigError, match=r"training option lr: Input should be greater than 0 \(got -1\.0\)"):
        parse_options(DpoOptions, {"lr": -1.0})
    with pytest.raises(ConfigError, match="micro_batch_size 8 exceeds batch_size 4"):
        parse_options(SftOptions, {"batch_size": 4, "micro_batch_size": 8})
    with pytest.raises(ConfigError, match="loss: Input should be 'dpo', 'cdpo', 'ipo', 'dpo-norm' or 'simpo'"):
        parse_options(DpoOptions, {"loss": "kto"})
    assert parse_options(DpoOptions, {"loss": "simpo"}).effective_beta == 2.0
    assert "max_steps" not in DpoOptions().identity()  # a run may be extended without starting over


# --- tracking -------------------------------------------------------------------------------------------------


def spec(out: Path, store_rows: int = 10, **options) -> tracking.RunSpec:
    return tracking.RunSpec("dpo", DpoOptions(**options), "tiny", "preference_dataset",
                            data.dataset_version(f"k{i}" for i in range(store_rows)), store_rows - 1, 1, out, 1, "cpu",
                            "fp32", 6)


def test_a_run_is_a_row_that_resumes_and_then_reports_completion(tmp_path):
    store = Store(tmp_path / "t.duckdb")
    store.migrate()
    out = tmp_path / "out"
    first = tracking.open_run(store, spec(out))
    (row,) = store.fetch("SELECT * FROM train_runs")
    assert (row["run_id"], row["status"], row["data_rows"], row["resumes"]) == (first.run_id, "running", 10, 0)
    assert json.loads(row["config"])["loss"] == "dpo" and row["base_model"] == "tiny"
    again = tracking.open_run(store, spec(out, max_steps=12))  # longer: the same run, resumed
    assert (again.run_id, again.resume_from, again.resume_step) == (first.run_id, None, 0)
    assert store.fetch("SELECT resumes FROM train_runs")[0]["resumes"] == 1
    tracking.finish_run(store, first.run_id, "completed", steps_done=6, final_path="/x")
    done = tracking.open_run(store, spec(out))
    assert done.completed and done.final_path == "/x"


def test_a_folder_of_another_run_is_refused_with_the_difference(tmp_path):
    store = Store(tmp_path / "t.duckdb")
    store.migrate()
    tracking.open_run(store, spec(tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"holds training run train-\w+ \(other options: lr 1e-06 -> 2e-06\)"):
        tracking.open_run(store, spec(tmp_path / "out", lr=2e-6))
    with pytest.raises(ConfigError, match="its dataset changed: 10 rows then, 11 now"):
        tracking.open_run(store, spec(tmp_path / "out", store_rows=11))


def test_checkpoints_register_prune_and_resume_deletes_later_metrics(tmp_path):
    store = Store(tmp_path / "t.duckdb")
    store.migrate()
    out = tmp_path / "out"
    run = tracking.open_run(store, spec(out)).run_id
    log = tracking.MetricsLog(store, run)
    for step in range(1, 7):
        log.log(step, {"loss": 1.0 / step})
        if step % 2 == 0:
            tracking.staging_dir(out, step).mkdir(parents=True)
            (tracking.staging_dir(out, step) / "state").write_text("x")
            log.flush()
            tracking.commit_checkpoint(store, run, out, step, keep=2)
    log.close()
    rows = store.fetch("SELECT step, pruned FROM train_checkpoints ORDER BY step")
    assert rows == [{"step": 2, "pruned": True}, {"step": 4, "pruned": False}, {"step": 6, "pruned": False}]
    assert not tracking.checkpoint_dir(out, 2).exists() and tracking.checkpoint_dir(out, 6).is_dir()
    assert tracking.latest_checkpoint(store, run) == (6, tracking.checkpoint_dir(out, 6))
    tracking.staging_dir(out, 8).mkdir()  # a save cut short by a kill
    import shutil

    shutil.rmtree(tracking.checkpoint_dir(out, 6))
    start = tracking.open_run(store, spec(out))
    assert (start.resume_step, start.resume_from) == (4, tracking.checkpoint_dir(out, 4))
    assert [r["step"] for r in store.fetch("SELECT step FROM train_metrics ORDER BY step")] == [1, 2, 3, 4]
    tracking.clear_staging(out)
    assert not tracking.staging_dir(out, 8).exists()


def test_one_training_process_group_per_folder(tmp_path):
    held = pytest.raises(ConfigError, match=r"is being trained by pid \d+")
    with tracking.run_lock(tmp_path), held, tracking.run_lock(tmp_path):
        pass
    with tracking.run_lock(tmp_path):  # released
        pass
