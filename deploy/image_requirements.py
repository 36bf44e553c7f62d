"""Split the project's dependencies between what vLLM's image provides and what rlaif's own environment adds.

The Dockerfile builds on vLLM's official image and installs rlaif into a virtual environment of its own that sees
the image's packages (``--system-site-packages``). vLLM and Prefect cannot share one set of packages: every vLLM
release since 0.32 pins ``fastapi<0.137`` and an older transformers, while Prefect 3.8.8's server needs
``fastapi>=0.139``. So vLLM keeps the image's python and packages (``vllm serve`` runs there), and rlaif's
environment installs its own pins, which shadow the image's copies for rlaif only, except for the GPU stack the
image was built and tested with (torch, triton, the nvidia-* libraries), which rlaif reuses as the image has it:

- ``requirements.txt``: each of ``[project].dependencies`` but the GPU stack, at the version the project's lock
  file (``--lock``, the repository's ``constraints.txt``, which setup.sh installs from too) pins;
- ``constraints.txt``: the lock's pins (what the requirements pull in is held to them as well) and the image's
  own versions of the GPU stack, so nothing replaces the image's torch in passing;
- ``no-deps.txt``: the packages installed without their dependencies (``[tool.rlaif].no-deps``), at the lock's pins.

The pins stay in the lock alone; this script only sorts them.

    python deploy/image_requirements.py pyproject.toml --lock constraints.txt --out DIR
    -> DIR/requirements.txt, DIR/constraints.txt, DIR/no-deps.txt
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"cannot read a distribution name from {requirement!r}")
    return canonical(match.group(1))


def installed_versions() -> dict[str, str]:
    """Every distribution of this interpreter, by canonical name."""
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def read_lock(text: str) -> dict[str, str]:
    """``name==version`` lines of a constraints file, by canonical name (comments and blank lines skipped)."""
    pins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version.strip():
            raise ValueError(f"lock line {number}: expected name==version, got {line!r}")
        pins[canonical(name.strip())] = version.strip()
    return pins


def image_owned(name: str) -> bool:
    """The GPU stack rlaif takes from the image as it is."""
    return name in ("torch", "triton") or name.startswith("nvidia-")


def split(pyproject: dict, installed: dict[str, str], lock: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """(requirements at the lock's pins but the GPU stack, constraints: the lock's pins and the image's GPU stack,
    no-deps requirements at the lock's pins)."""
    own = canonical(pyproject["project"]["name"])
    names = [requirement_name(r) for r in pyproject["project"]["dependencies"]]
    unpinned = [name for name in names if name not in lock]
    if unpinned:
        raise ValueError(f"the lock pins no version of {', '.join(unpinned)}")
    requirements = [f"{name}=={lock[name]}" for name in names if not (image_owned(name) and name in installed)]
    held = {name: version for name, version in lock.items() if not (image_owned(name) and name in installed)}
    held.update({name: version for name, version in installed.items() if image_owned(name)})
    constraints = [f"{name}=={version}" for name, version in sorted(held.items()) if name != own]
    no_deps = [f"{requirement_name(r)}=={lock.get(requirement_name(r), r.partition('==')[2])}"
               for r in pyproject.get("tool", {}).get("rlaif", {}).get("no-deps", [])]
    return requirements, constraints, no_deps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--lock", type=Path, required=True, help="the project's constraints.txt")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    pyproject = tomllib.loads(args.pyproject.read_text(encoding="utf-8"))
    requirements, constraints, no_deps = split(pyproject, installed_versions(),
                                               read_lock(args.lock.read_text(encoding="utf-8")))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, lines in (("requirements", requirements), ("constraints", constraints), ("no-deps", no_deps)):
        (args.out / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    deps = pyproject["project"]["dependencies"]
    wanted = {requirement_name(r) for r in requirements}
    kept = ", ".join(requirement_name(r) for r in deps if requirement_name(r) not in wanted) or "none"
    print(f"{len(requirements)} of {len(deps)} dependencies to install; the image's own: {kept}; "
          f"{len(constraints)} versions held; {len(no_deps)} without dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
