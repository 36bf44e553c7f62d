"""Dataset export: COPY of the dataset views to .parquet / .jsonl, read back the way training reads them."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from datasets import Dataset  # noqa: E402

from rlaif.errors import ConfigError, StoreError  # noqa: E402
from rlaif.store import Store, export_dataset, utcnow  # noqa: E402

SFT_COLUMNS = ["messages", "prompt", "completion", "prompt_id", "run_id", "constitution_name",
               "constitution_version", "model", "split"]
PREFS_COLUMNS = ["prompt", "chosen", "rejected", "p_chosen", "margin", "prompt_id", "pair_id", "judge_model",
                 "constitution_version", "run_id", "split"]


def prompt(pid: str, text: str) -> dict:
    return {"prompt_id": pid, "text": text, "messages": [{"role": "user", "content": text}], "split": "train",
            "created_at": utcnow()}


def revision(chain: str, rnd: int, pid: str, text: str) -> dict:
    return {"chain_id": chain, "round": rnd, "run_id": "run-1", "prompt_id": pid, "principle_id": "harm",
            "original": "Sure, here is how.", "before": "b", "revision": text, "constitution_name": "harmless",
            "constitution_version": "v1", "model": "smol", "created_at": utcnow()}


def comparison(pair: str, pid: str, p_a: float) -> dict:
    return {"comparison_id": pair, "pair_id": pair, "run_id": "run-2", "prompt_id": pid, "principle_id": "harm",
            "response_a": f"{pair} A", "response_b": f"{pair} B", "p_a": p_a, "consistent": True,
            "judge_model": "judge", "constitution_name": "harmless", "constitution_version": "v1",
            "created_at": utcnow()}


@pytest.fixture(scope="module", params=["file", "lake"])
def db(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    folder = tmp_path_factory.mktemp("export")  # the same exports from the file store and from a lake
    store = Store(folder / "rlaif.duckdb" if request.param == "file" else f"ducklake:{folder / 'rlaif.ducklake'}")
    store.migrate()
    store.write({
        "prompts": [prompt("p1", "How do I hotwire a car?"), prompt("p2", "Tell me a joke.")],
        "revisions": [revision("c1", 1, "p1", "I can't help with that."),
                      revision("c1", 2, "p1", "I can't help with that, but a locksmith can."),
                      revision("c2", 1, "p2", "Why did the chicken cross the road?")],
        "comparisons": [comparison("pair1", "p1", 0.9), comparison("pair2", "p2", 0.25),
                        comparison("pair3", "p2", 0.5)],  # a tie: not exported
    })
    return store.path


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_sft_export_reads_back_as_trl_conversations(db: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"sft{suffix}"
    assert export_dataset(db, "sft", out) == 2
    ds = load(out, tmp_path)
    assert ds.column_names == SFT_COLUMNS
    first = ds[0]
    assert first["messages"] == [
        {"role": "user", "content": "How do I hotwire a car?"},
        {"role": "assistant", "content": "I can't help with that, but a locksmith can."},
    ]
    assert (first["prompt"], first["completion"]) == ("How do I hotwire a car?", first["messages"][-1]["content"])
    assert (first["prompt_id"], first["run_id"], first["constitution_name"], first["constitution_version"],
            first["model"], first["split"]) == ("p1", "run-1", "harmless", "v1", "smol", "train")
    assert ds[1]["completion"] == "Why did the chicken cross the road?"


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_prefs_export_reads_back_in_trl_preference_format(db: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"prefs{suffix}"
    assert export_dataset(db, "prefs", out) == 2
    ds = load(out, tmp_path)
    assert ds.column_names == PREFS_COLUMNS
    rows = {r["pair_id"]: r for r in ds}
    assert set(rows) == {"pair1", "pair2"}
    assert (rows["pair1"]["chosen"], rows["pair1"]["rejected"]) == ("pair1 A", "pair1 B")
    assert (rows["pair2"]["chosen"], rows["pair2"]["rejected"]) == ("pair2 B", "pair2 A")
    assert rows["pair1"]["p_chosen"] == pytest.approx(0.9) and rows["pair1"]["margin"] == pytest.approx(0.8)
    assert rows["pair2"]["p_chosen"] == pytest.approx(0.75) and rows["pair2"]["margin"] == pytest.approx(0.5)
    assert (rows["pair1"]["prompt"], rows["pair1"]["judge_model"], rows["pair1"]["run_id"]) == (
        "How do I hotwire a car?", "judge", "run-2")


def load(path: Path, tmp_path: Path) -> Dataset:
    cache = str(tmp_path / "hf-cache")
    if path.suffix == ".parquet":
        return Dataset.from_parquet(str(path), cache_dir=cache)
    return Dataset.from_json(str(path), cache_dir=cache)


def test_export_replaces_the_file_whole_and_leaves_no_temp_file(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft.jsonl"
    out.write_text("stale\n")
    assert export_dataset(db, "sft", out) == 2
    assert len(out.read_text().splitlines()) == 2 and "stale" not in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft.jsonl"]


def test_bad_suffix_or_dataset_is_a_config_error(db: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected one of: \.parquet, \.jsonl"):
        export_dataset(db, "sft", tmp_path / "sft.csv")
    with pytest.raises(ConfigError, match="expected one of: sft, prefs"):
        export_dataset(db, "dpo", tmp_path / "x.parquet")  # type: ignore[arg-type]


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
