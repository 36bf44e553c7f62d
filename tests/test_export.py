"""Dataset export: each dataset in each format and kind of file, the filters, the dataset card and the Hub push,
read back the way a user reads them (``datasets``). tests/test_export_trl.py runs TRL's trainers on the exports."""

from __future__ import annotations

import io
from pathlib import Path

import duckdb
import pytest
from datasets import Dataset, load_from_disk
from export_rows import HARMLESS, TURNS, comparison, make_export_db, prompt
from ruamel.yaml import YAML

from rlaif.errors import ConfigError, StoreError
from rlaif.exports import Filters, export_dataset, push_to_hub
from rlaif.exports.card import MARKER
from rlaif.exports.formats import write_export
from rlaif.store import Store
from rlaif.store import export_dataset as store_export


@pytest.fixture(scope="module", params=["file", "lake"])
def db(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path | str:
    folder = tmp_path_factory.mktemp("export")  # the same exports from the file store and from a lake
    target = folder / "rlaif.duckdb" if request.param == "file" else f"ducklake:{folder / 'rlaif.ducklake'}"
    return make_export_db(target)


def load(path: Path, tmp_path: Path) -> Dataset:
    cache = str(tmp_path / "hf-cache")
    if path.suffix == ".parquet":
        return Dataset.from_parquet(str(path), cache_dir=cache)
    if path.suffix == ".jsonl":
        return Dataset.from_json(str(path), cache_dir=cache)
    return load_from_disk(str(path))


def asst(text: str) -> dict:
    return {"role": "assistant", "content": text}


# -- the trl format ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sft.parquet", "sft.jsonl", "sft"])
def test_sft_trl_is_messages_alone_with_every_turn(db: Path, tmp_path: Path, name: str) -> None:
    done = export_dataset(db, "sft", tmp_path / name)
    assert (done.rows, done.kind) == (2, {"sft.parquet": "parquet", "sft.jsonl": "jsonl", "sft": "disk"}[name])
    ds = load(tmp_path / name, tmp_path)
    assert ds.column_names == ["messages"]
    assert ds[0]["messages"] == [*TURNS, asst("I can't help with that, but a locksmith can.")]  # system kept
    assert ds[1]["messages"] == [{"role": "user", "content": "Tell me a joke."},
                                 asst("Why did the chicken cross the road?")]


def test_prefs_trl_is_conversational_prompt_chosen_rejected_with_p_chosen(db: Path, tmp_path: Path) -> None:
    assert export_dataset(db, "prefs", tmp_path / "prefs.parquet").rows == 5
    ds = load(tmp_path / "prefs.parquet", tmp_path)
    assert ds.column_names == ["prompt", "chosen", "rejected", "p_chosen"]  # no margin
    first = ds[0]
    assert (first["prompt"], first["chosen"], first["rejected"]) == (TURNS, [asst("pair1 A")], [asst("pair1 B")])
    assert first["p_chosen"] == pytest.approx(0.9)
    by_chosen = {r["chosen"][0]["content"]: r for r in ds}
    assert by_chosen["pair2 B"]["rejected"] == [asst("pair2 A")] and by_chosen["pair2 B"]["p_chosen"] == 0.75
    assert by_chosen["pair6 A"]["p_chosen"] is None  # decided by votes: no probability


def test_rm_trl_holds_whole_conversations_and_no_margin(db: Path, tmp_path: Path) -> None:
    export_dataset(db, "rm", tmp_path / "rm.jsonl")
    ds = load(tmp_path / "rm.jsonl", tmp_path)
    assert ds.column_names == ["chosen", "rejected", "p_chosen"]
    assert ds[0]["chosen"] == [*TURNS, asst("pair1 A")] and ds[0]["rejected"] == [*TURNS, asst("pair1 B")]


def test_kto_labels_each_answer_by_its_wins_and_losses(db: Path, tmp_path: Path) -> None:
    export_dataset(db, "kto", tmp_path / "kto.parquet")
    ds = load(tmp_path / "kto.parquet", tmp_path)
    assert ds.column_names == ["prompt", "completion", "label"]
    labels = {(r["prompt"][-1]["content"], r["completion"][0]["content"]): r["label"] for r in ds}
    # pair2 A lost pair2 and won pair4: no verdict, left out
    assert labels == {("How do I hotwire a car?", "pair1 A"): True, ("How do I hotwire a car?", "pair1 B"): False,
                      ("Tell me a joke.", "pair2 B"): True, ("Tell me a joke.", "pair4 B"): False,
                      ("Name a river.", "pair5 A"): True, ("Name a river.", "pair5 B"): False,
                      ("Name a river.", "pair6 A"): True, ("Name a river.", "pair6 B"): False}
    assert ds[0]["prompt"] == TURNS


# -- the raw format ---------------------------------------------------------------------------------------------

def test_raw_formats_keep_the_lineage_and_call_nothing_margin(db: Path, tmp_path: Path) -> None:
    export_dataset(db, "sft", tmp_path / "sft.jsonl", fmt="raw")
    sft = load(tmp_path / "sft.jsonl", tmp_path)
    assert sft.column_names == ["messages", "prompt", "completion", "prompt_id", "run_id", "constitution_name",
                                "constitution_version", "model", "split", "policy_model", "helpful"]
    assert (sft[0]["prompt"], sft[0]["run_id"], sft[0]["policy_model"]) == ("How do I hotwire a car?", "run-1",
                                                                             "policy-m")
    export_dataset(db, "prefs", tmp_path / "prefs.parquet", fmt="raw")
    prefs = {r["pair_id"]: r for r in load(tmp_path / "prefs.parquet", tmp_path)}
    first = prefs["pair1"]
    assert "margin" not in first and first["confidence"] == pytest.approx(0.8)
    assert (first["prompt"], first["chosen"], first["judge_model"], first["run_id"]) == (
        "How do I hotwire a car?", "pair1 A", "judge", "run-2")
    assert (prefs["pair6"]["p_chosen"], prefs["pair6"]["vote_chosen"], prefs["pair6"]["confidence"]) == (None, 1.0, 1.0)
    export_dataset(db, "kto", tmp_path / "kto", fmt="raw")
    kto = load(tmp_path / "kto", tmp_path)
    assert {"prompt", "completion", "label", "wins", "losses", "prompt_id", "judge_model", "run_id"} <= set(
        kto.column_names)
    assert {(r["completion"], r["wins"], r["losses"]) for r in kto if r["prompt_id"] == "p2"} == {
        ("pair2 B", 1, 0), ("pair4 B", 0, 1)}


# -- filters ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("filters", "pairs"), [
    (Filters(), {"pair1", "pair2", "pair4", "pair5", "pair6"}),
    (Filters(run="run-3"), {"pair5", "pair6"}),
    (Filters(split="eval"), {"pair5", "pair6"}),
    (Filters(split="train", consistent_only=True), {"pair1", "pair4"}),
    (Filters(min_confidence=0.5), {"pair1", "pair2", "pair5", "pair6"}),  # pair4: |2 * 0.6 - 1| = 0.2
])
def test_filters_pick_the_pairs(db: Path, tmp_path: Path, filters: Filters, pairs: set[str]) -> None:
    out = tmp_path / "prefs.jsonl"
    assert write_export(db, "prefs", "raw", out, filters).rows == len(pairs)
    assert {r["pair_id"] for r in load(out, tmp_path)} == pairs


def test_sft_filters_and_bad_filter_values(db: Path, tmp_path: Path) -> None:
    assert write_export(db, "sft", "trl", tmp_path / "s.jsonl", Filters(run="run-9")).rows == 0
    assert write_export(db, "sft", "trl", tmp_path / "s.jsonl", Filters(split="train")).rows == 2
    with pytest.raises(ConfigError, match="apply to prefs, kto and rm, not sft"):
        write_export(db, "sft", "trl", tmp_path / "s.jsonl", Filters(consistent_only=True))
    with pytest.raises(ConfigError, match="split: expected train or eval, got 'test'"):
        write_export(db, "prefs", "trl", tmp_path / "p.jsonl", Filters(split="test"))
    with pytest.raises(ConfigError, match="expected a number from 0 to 1"):
        write_export(db, "prefs", "trl", tmp_path / "p.jsonl", Filters(min_confidence=2.0))


# -- the dataset card -------------------------------------------------------------------------------------------

def card_parts(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return YAML(typ="safe").load(io.StringIO(header)), body


def test_the_card_describes_the_rows_exported(db: Path, tmp_path: Path) -> None:
    export_dataset(db, "prefs", tmp_path / "prefs.parquet", command="rlaif export prefs --out prefs.parquet")
    meta, body = card_parts(tmp_path / "README.md")
    assert meta["configs"] == [{"config_name": "prefs", "data_files": [{"split": "train", "path": "prefs.parquet"}]}]
    assert (meta["license"], meta["task_categories"], meta["size_categories"]) == ("other", ["text-generation"],
                                                                                   ["n<1K"])
    assert "dpo" in meta["tags"] and MARKER in body
    assert "| judge | choice | 5 | 71.0% (64.0%-77.0%) | 55.0% | 45.0% | 200 (judge_eval_pairs.jsonl) |" in body
    assert "| pair | near_duplicate | 1 |" in body  # the flagged pair of run-3
    assert "| eval | 2 |" in body and "| train | 3 |" in body
    assert "- decided by votes (p_chosen NULL): 1" in body
    assert "| `run-2` | prefs | policy-m (openai) | judge (vllm) |" in body
    assert body.rstrip().endswith("```\nrlaif export prefs --out prefs.parquet\n```")


def test_the_sft_card_lists_the_constitutions_principles(db: Path, tmp_path: Path) -> None:
    export_dataset(db, "sft", tmp_path / "sft", license="cc-by-4.0")
    meta, body = card_parts(tmp_path / "sft" / "README.md")
    assert meta["license"] == "cc-by-4.0"
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data-*.arrow"}]
    assert f"**harmless**, version `{HARMLESS.version}` (2 rows)" in body
    assert all(f"principle `{p.id}`" in body for p in HARMLESS.principles)
    assert "| `run-1` | sft | policy-m (openai) | feedback-m (vllm) |" in body
    assert len(load_from_disk(str(tmp_path / "sft"))) == 2  # the card beside the data does not disturb datasets


def test_a_readme_that_rlaif_did_not_write_is_kept(db: Path, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("my notes\n")
    with pytest.raises(ConfigError, match="was not written by rlaif"):
        export_dataset(db, "sft", tmp_path / "sft.parquet")
    assert (tmp_path / "README.md").read_text() == "my notes\n" and not (tmp_path / "sft.parquet").exists()


# -- the Hub ----------------------------------------------------------------------------------------------------

class FakeHfApi:
    """huggingface_hub.HfApi at its boundary: records the calls, returns what the real client returns."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, token: str | None = None):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id: str, **kw) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kw) -> object:
        self.calls.append(("upload_folder", kw))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/datasets/{kw['repo_id']}/commit/1"})()


@pytest.mark.parametrize("name", ["prefs.parquet", "prefs"])
def test_push_to_hub_uploads_the_data_and_its_card(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   name: str) -> None:
    import fnmatch

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(FakeHfApi, "calls", [])
    (tmp_path / "unrelated.txt").write_text("not for the hub")
    done = export_dataset(db, "prefs", tmp_path / name)
    assert push_to_hub(done, "me/prefs", private=True, token="t") == "https://huggingface.co/datasets/me/prefs/commit/1"
    (_, init), (_, repo), (_, upload) = FakeHfApi.calls
    assert init == {"token": "t"}
    assert repo == {"repo_id": "me/prefs", "repo_type": "dataset", "private": True, "exist_ok": True}
    assert (upload["repo_id"], upload["repo_type"], upload["folder_path"]) == ("me/prefs", "dataset", str(done.folder))
    files = sorted(str(p.relative_to(done.folder)) for p in done.folder.rglob("*") if p.is_file())
    sent = [f for f in files if any(fnmatch.fnmatch(f, pat) for pat in upload["allow_patterns"])]
    expected = ["README.md", "prefs.parquet"] if name.endswith(".parquet") else [
        "README.md", "data-00000-of-00001.arrow", "dataset_info.json", "state.json"]
    assert sent == expected


def test_push_to_hub_refuses_offline_and_a_bad_repo_name(db: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    done = export_dataset(db, "sft", tmp_path / "sft.jsonl")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="set HF_HUB_OFFLINE=0"):
        push_to_hub(done, "me/sft")
    with pytest.raises(ConfigError, match="expected a repository as OWNER/NAME"):
        push_to_hub(done, "sft")


# -- the command ------------------------------------------------------------------------------------------------

def test_the_export_command(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from rlaif.cli import main

    out = tmp_path / "kto.jsonl"
    assert main(["--db", str(db), "export", "kto", "--out", str(out), "--split", "eval", "--min-margin", "0.5"]) == 0
    assert capsys.readouterr().out == f"wrote 4 rows to {out} (jsonl) and its card to {tmp_path / 'README.md'}\n"
    _, body = card_parts(tmp_path / "README.md")
    assert f"rlaif export kto --out {out} --format trl --split eval --min-margin 0.5" in body
    assert main(["--db", str(db), "export", "dpo", "--out", str(out)]) == 2
    assert "unknown dataset 'dpo'; expected one of: sft, prefs, kto, rm" in capsys.readouterr().err
    assert main(["--db", str(db), "export", "sft", "--out", str(out), "--consistent-only"]) == 2
    assert main(["--db", str(db), "export", "sft", "--out", str(tmp_path / "x.csv")]) == 2
    assert "unknown file type '.csv'" in capsys.readouterr().err


def test_the_export_command_pushes_after_writing(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    import huggingface_hub

    from rlaif.cli import main

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(FakeHfApi, "calls", [])
    out = tmp_path / "rm.parquet"
    assert main(["--db", str(db), "export", "rm", "--out", str(out), "--push-to-hub", "me/rm"]) == 2  # offline
    assert "set HF_HUB_OFFLINE=0" in capsys.readouterr().err and out.is_file() and FakeHfApi.calls == []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert main(["--db", str(db), "export", "rm", "--out", str(out), "--push-to-hub", "me/rm", "--private"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "pushed to https://huggingface.co/datasets/me/rm/commit/1"
    assert [name for name, _ in FakeHfApi.calls] == ["init", "create_repo", "upload_folder"]
    assert FakeHfApi.calls[1][1]["private"] is True


# -- writing safely ---------------------------------------------------------------------------------------------

def test_export_replaces_the_file_whole_and_leaves_no_temp_file(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft.jsonl"
    out.write_text("stale\n")
    assert store_export(db, "sft", out) == 2  # the raw format, for callers from before rlaif.exports
    assert len(out.read_text().splitlines()) == 2 and "stale" not in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft.jsonl"]
    folder = tmp_path / "sft"
    export_dataset(db, "sft", folder, fmt="raw")
    export_dataset(db, "sft", folder, filters=Filters(run="run-9"))  # replaces the folder
    assert len(load_from_disk(str(folder))) == 0 and sorted(p.name for p in tmp_path.iterdir()) == [
        "sft", "sft.jsonl"]


def test_a_folder_that_is_not_an_export_is_not_replaced(db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="is not a dataset folder that rlaif wrote"):
        write_export(db, "sft", "trl", folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and sorted(p.name for p in tmp_path.iterdir()) == [
        "mine"]


def test_missing_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no database at"):
        export_dataset(tmp_path / "none.duckdb", "sft", tmp_path / "sft.parquet")
    assert not (tmp_path / "sft.parquet").exists()


def test_a_failing_export_leaves_nothing_behind(tmp_path: Path) -> None:
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()  # a database without the dataset views
    out = tmp_path / "out" / "prefs.parquet"
    with pytest.raises(StoreError, match="cannot export prefs"):
        export_dataset(empty, "prefs", out)
    assert list(out.parent.iterdir()) == []


# -- pairs decided by votes (an engine without log-probs) ----------------------------------------------------------

def test_a_pair_decided_by_votes_trains_with_its_vote_share(tmp_path: Path, tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    from rlaif.train.data import pair_examples, read_preference_rows

    store = Store(tmp_path / "votes.duckdb")
    store.migrate()
    voted = {**comparison("pair1", "p1", None), "vote_a": 0.0, "method": "vote"}  # b won every vote
    store.write({"prompts": [prompt("p1", "How do I hotwire a car?")], "comparisons": [voted]})
    (view,) = store.fetch("SELECT p_chosen, vote_chosen, confidence, chosen FROM preference_dataset")
    assert view == {"p_chosen": None, "vote_chosen": 1.0, "confidence": 1.0, "chosen": "pair1 B"}
    rows = read_preference_rows(store)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    (example,), skipped = pair_examples(rows, tok, end_of_turn=["<|im_end|>"], max_length=64)
    assert (skipped, example.p_chosen) == (0, 1.0)
