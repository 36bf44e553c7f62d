"""Sharding by prompt-hash range, and merging shard databases: two shard workers as separate processes, merged,
give the keys of one single-process run, and a second merge adds nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlaif.cli import main
from rlaif.errors import ConfigError, StoreError
from rlaif.prompts import make_prompt
from rlaif.shards import merge_shards, parse_shard, select_shard, shard_hash, shard_of, shard_range
from rlaif.store import Store

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "gen_worker.py"
IDS = [make_prompt(f"prompt number {i}").prompt_id for i in range(2000)]


def test_every_id_is_in_exactly_one_shard_and_shards_are_even() -> None:
    for n in (1, 2, 3, 7):
        owners = [shard_of(pid, n) for pid in IDS]
        assert set(owners) == set(range(1, n + 1))
        sizes = [owners.count(i) for i in range(1, n + 1)]
        assert max(sizes) - min(sizes) < 0.2 * len(IDS) / n
        for pid, i in zip(IDS, owners):  # the owner's range holds the id's hash, no other range does
            lo, hi = shard_range(i, n)
            assert lo <= shard_hash(pid) < hi
    ranges = [shard_range(i, 3) for i in (1, 2, 3)]
    assert ranges[0][0] == 0 and ranges[-1][1] == 1 << 64
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, no gap, no overlap


def test_shards_are_stable_and_nest_when_doubled() -> None:
    assert [shard_of(pid, 4) for pid in IDS[:50]] == [shard_of(pid, 4) for pid in IDS[:50]]
    assert shard_of("a1b2c3", 8) == 1 + (int.from_bytes(
        __import__("hashlib").sha256(b"shard:a1b2c3").digest()[:8], "big") * 8 >> 64)
    for pid in IDS:
        assert shard_of(pid, 8) in (2 * shard_of(pid, 4) - 1, 2 * shard_of(pid, 4))


def test_shards_do_not_follow_the_train_eval_split() -> None:
    prompts = [make_prompt(f"prompt number {i}") for i in range(2000)]
    evals = [sum(p.split == "eval" for p in select_shard(prompts, (i, 4))) for i in (1, 2, 3, 4)]
    assert all(30 <= e <= 75 for e in evals), evals  # about 10% of ~500 each


@pytest.mark.parametrize("text, message", [("3", "expected I/N"), ("0/4", "I must be between 1 and N"),
                                           ("5/4", "I must be between 1 and N"), ("1/0", "N must be")])
def test_a_bad_shard_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_shard(text)
    assert parse_shard(" 2 / 4 ") == (2, 4)


def run_worker(db: Path, tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLAIF_")}
    env.update(PYTHONPATH=str(ROOT), RLAIF_CONFIG=str(tmp_path / "absent.toml"))
    return subprocess.Popen([sys.executable, str(WORKER), str(db), "--prompts", "200", "--seed", "3", "--judge",
                             "--in-flight", "16", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


KEYED = {"prompts": "prompt_id", "generations": "key", "responses": "chain_id",
         "revisions": "chain_id || '/' || round", "comparisons": "comparison_id"}
# Flags that compare a run's answers with each other (near_duplicate, long, short) are computed by each shard over
# its own share (docs/scaling.md, "Shards"); the per-row flags must match a single run's.
ROW_FLAGS = "SELECT target || '/' || target_id || '/' || flag AS k FROM row_flags " \
            "WHERE flag NOT IN ('near_duplicate', 'long', 'short')"


def keys(db: Path) -> dict[str, set[str]]:
    store = Store(db)
    found = {t: {r["k"] for r in store.fetch(f"SELECT {k} AS k FROM {t}")} for t, k in KEYED.items()}
    return {**found, "row flags": {r["k"] for r in store.fetch(ROW_FLAGS)}}


def test_two_shard_workers_merged_equal_one_single_process_run(tmp_path: Path, capsys) -> None:
    shards = [tmp_path / f"shard{i}.duckdb" for i in (1, 2)]
    single = tmp_path / "single.duckdb"
    procs = [run_worker(db, tmp_path, "--shard", f"{i}/2") for i, db in zip((1, 2), shards)]
    procs.append(run_worker(single, tmp_path))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    parts = [keys(db)["prompts"] for db in shards]
    assert parts[0] and parts[1] and not parts[0] & parts[1]  # both shards did work, none twice

    merged = tmp_path / "merged.duckdb"
    assert main(["shards", "merge", *map(str, shards), "--into", str(merged)]) == 0
    out = capsys.readouterr().out
    assert "generations +" in out and "merged 2 shard(s)" in out
    expected = keys(single)
    assert all(expected[t] for t in KEYED) and keys(merged) == expected
    assert len(Store(merged).fetch("SELECT * FROM runs")) == 2  # each shard's run, with its own id

    again = merge_shards(shards, merged)  # idempotent: nothing new the second time
    assert all(n == 0 for counts in again.values() for n in counts.values())
    assert keys(merged) == expected


def test_merge_refuses_itself_a_missing_file_and_a_newer_shard(tmp_path: Path) -> None:
    target, shard = tmp_path / "t.duckdb", tmp_path / "s.duckdb"
    Store(shard).migrate()
    with pytest.raises(ConfigError, match="no such shard"):
        merge_shards([tmp_path / "none.duckdb"], target)
    with pytest.raises(ConfigError, match="into itself"):
        merge_shards([target], target)
    with Store(shard).connect() as con:
        con.execute("INSERT INTO schema_migrations VALUES (999, '999_future', now()::TIMESTAMP)")
    with pytest.raises(StoreError, match="migration 999"):
        merge_shards([shard], target)
