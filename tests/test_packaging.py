"""An installed rlaif (a wheel, not the checkout) finds its constitutions, migrations, data files and flows."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("rlaif-*.whl")
    return built


def test_wheel_ships_the_data_folders(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("rlaif/_data/constitutions/harmless.yaml", "rlaif/_data/storage/001_initial.sql",
                   "rlaif/_data/storage/002_dataset_views.sql", "rlaif/_data/storage/004_sft.sql",
                   "flows/__init__.py", "flows/sl_cai.py", "rlaif/data/demo_prompts.jsonl",
                   "rlaif/data/refusal_patterns.txt", "rlaif/cli/__init__.py", "rlaif/cli/generate.py"):
        assert needed in names, needed


def test_installed_wheel_runs_without_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import rlaif, rlaif.resources as r; from rlaif.constitution import load_constitution, "
            "resolve_constitution; from rlaif.store import Store; import sys;"
            "assert '_data' in str(r.data_dir('storage')), r.data_dir('storage');"
            "c = load_constitution(resolve_constitution('harmless')); s = Store(sys.argv[1]); s.migrate();"
            "import flows.sl_cai, rlaif.stages.flags as f; f.load_refusal_patterns();"
            "print(rlaif.__file__, flows.sl_cai.__file__, c.name, len(s.fetch('SELECT * FROM schema_migrations')))")
    # run from tmp_path with only the installed copy on the path, so the checkout cannot be imported
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w.duckdb")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    location, flow, name, migrations = proc.stdout.split()
    assert location.startswith(str(target)) and flow.startswith(str(target))
    assert name == "harmless" and int(migrations) >= 4
