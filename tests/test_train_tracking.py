"""Training metrics reach the trackers people watch: with TensorBoard installed a run writes its event files by
default, and reading them back gives the loss curve ``train_metrics`` holds, step for step; a named tracker
whose package is missing is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import crafted_store

from rlaif.errors import ConfigError
from rlaif.train.dpo import train_dpo
from rlaif.train.options import DpoOptions
from rlaif.train.tracking import TENSORBOARD_DIR, read_metrics, tracker_names

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def event_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in the TensorBoard event files under ``folder``, as (step, value) in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(folder.rglob("events.out.tfevents.*"))
    assert files, f"no event file under {folder}"
    series: dict[str, list[tuple[int, float]]] = {}
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return {tag: sorted(values) for tag, values in series.items()}


def test_tensorboard_is_written_by_default_and_holds_the_stored_loss_curve(tiny_dir, tmp_path):
    store = crafted_store(tmp_path / "t.duckdb", pairs=16)
    options = DpoOptions(lr=2e-4, batch_size=4, micro_batch_size=4, max_steps=4, save_every=0)
    assert options.report_to == "auto" and tracker_names("auto") == ["tensorboard"]  # installed by the dev extra
    result = train_dpo(store, options=options, base_model="tiny", base_path=tiny_dir, out_dir=tmp_path / "dpo",
                       device="cpu", log=lambda _: None)
    stored = read_metrics(store, result.run_id, "loss")
    assert [step for step, _ in stored] == [1, 2, 3, 4]
    scalars = event_scalars(tmp_path / "dpo" / TENSORBOARD_DIR / result.run_id)
    assert [step for step, _ in scalars["step/loss"]] == [1, 2, 3, 4]
    assert [v for _, v in scalars["step/loss"]] == pytest.approx([v for _, v in stored], rel=1e-6)
    card = (tmp_path / "dpo" / "final" / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card and "Loss: DPO" in card  # the policy's model card
    eval_loss = read_metrics(store, result.run_id, "loss", phase="eval")
    assert [step for step, _ in eval_loss] == [step for step, _ in scalars["eval/loss"]] == [0, 4]  # evaluations
    assert [v for _, v in scalars["eval/loss"]] == pytest.approx([v for _, v in eval_loss], rel=1e-6)


def test_report_to_none_and_a_missing_tracker_package():
    import importlib.util

    assert tracker_names("none") == []
    for name in ("wandb", "mlflow"):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(ConfigError, match=f"--report-to {name} needs the {name} package: pip install {name}"):
                tracker_names(name)
        else:
            assert tracker_names(name) == [name]
    with pytest.raises(ValueError, match="report_to"):
        DpoOptions(report_to="comet")


def test_rl_runs_write_their_metrics_to_tensorboard_and_a_model_card(tiny_dir, tmp_path, monkeypatch):
    from rl_helpers import prompt_store, write_rules

    from rlaif.train.rewards import build_reward, parse_reward_specs
    from rlaif.train.rl import run_rl
    from rlaif.train.rl_options import RlOptions

    monkeypatch.chdir(tmp_path)
    store = prompt_store(tmp_path / "rl.duckdb", n=16)
    options = RlOptions(estimator="grpo", rewards=(write_rules(tmp_path),), batch_size=8, micro_batch_size=8,
                        max_steps=2, save_every=0, monitor_prompts=0, report_to="tensorboard",
                        rollout={"max_new_tokens": 4, "samples": 4, "batch_size": 8})
    result = run_rl(store, options=options, reward=build_reward(parse_reward_specs(options.rewards)),
                    base_model="tiny", base_path=tiny_dir, out_dir=tmp_path / "rl", device="cpu", log=lambda _: None)
    stored = read_metrics(store, result.run_id, "reward")
    scalars = event_scalars(tmp_path / "rl" / TENSORBOARD_DIR / result.run_id)
    assert [s for s, _ in scalars["step/reward"]] == [s for s, _ in stored] == [1, 2]
    assert [v for _, v in scalars["step/reward"]] == pytest.approx([v for _, v in stored], rel=1e-6)
    assert "Loss: group-relative policy optimisation" in (tmp_path / "rl" / "final" / "README.md").read_text()
