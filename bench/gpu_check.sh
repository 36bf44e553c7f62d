#!/usr/bin/env bash
# The GPU check in one script: bf16 SFT, RM, DPO and GRPO steps on the embedded model, the DPO steps again under
# FSDP2 through `accelerate launch` on one GPU, and DPO tokens/s and MFU on a random-init ~0.5B Llama; one JSON of
# figures at the end. Written for one H100 in at most 8 minutes with torch, transformers, accelerate and peft but
# no vLLM and no package registry (each phase has its own time limit). `--cpu` runs the same phases at tiny sizes
# on the CPU (the test does that).
#
#   bench/gpu_check.sh --pack                     # here: make .gpu-carry/ (the few packages and the model shape)
#   bench/gpu_check.sh --out gpu_check.json       # there: the repository plus .gpu-carry/
#   bench/gpu_check.sh --cpu --model DIR --out x.json
#
# What travels (docs/benchmarks.md, "GPU check"): the repository and .gpu-carry/, made by --pack on a machine with
# the project installed: site.tar.gz holds the imports the training code needs beyond torch/transformers/
# accelerate/peft (duckdb, pydantic, pydantic-settings, python-dotenv; ~25 MB compressed, for this Python
# version), model-shape/ the embedded model's config and tokenizer (~3.5 MB). Its weights (538 MB) do not fit a
# 64 MiB carry: without --model (or the converted model in the cache) the check trains that shape from a random
# init, and says so in the JSON ("weights": "random-init").
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CARRY="${RLAIF_GPU_CARRY:-$ROOT/.gpu-carry}"
EMBEDDED="${RLAIF_CACHE_DIR:-$HOME/.cache/rlaif}/models/SmolLM2-135M-Instruct"
CPU="" MODEL="" OUT="gpu_check.json" PACK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU="--cpu" ;;
    --model) MODEL="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --pack) PACK=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (expected --cpu, --model DIR, --out FILE, --pack)" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "$PACK" ]; then
  mkdir -p "$CARRY/model-shape"
  SITE="$("$PYTHON" -c 'import duckdb, os; print(os.path.dirname(os.path.dirname(duckdb.__file__)))')" || exit 1
  (cd "$SITE" && tar czf "$CARRY/site.tar.gz" duckdb _duckdb* duckdb-*.dist-info pydantic pydantic-*.dist-info \
    pydantic_core pydantic_core-*.dist-info pydantic_settings pydantic_settings-*.dist-info dotenv \
    python_dotenv-*.dist-info typing_inspection typing_inspection-*.dist-info annotated_types \
    annotated_types-*.dist-info) || exit 1
  for f in config.json generation_config.json tokenizer.json tokenizer_config.json special_tokens_map.json \
           chat_template.jinja; do
    [ -f "$EMBEDDED/$f" ] && cp "$EMBEDDED/$f" "$CARRY/model-shape/"
  done
  du -sh "$CARRY"
  exit 0
fi

WORK="$(mktemp -d -t gpu-check-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
if ! "$PYTHON" -c "import duckdb, pydantic_settings" 2>/dev/null; then
  if [ -f "$CARRY/site.tar.gz" ]; then
    mkdir -p "$WORK/site" && tar xzf "$CARRY/site.tar.gz" -C "$WORK/site" && export PYTHONPATH="$PYTHONPATH:$WORK/site"
  else
    echo "gpu_check.sh: duckdb/pydantic-settings are missing and $CARRY/site.tar.gz is not there (run --pack)" >&2
    exit 2
  fi
fi
WEIGHTS="trained"
if [ -z "$MODEL" ]; then
  if [ -f "$EMBEDDED/model.safetensors" ]; then MODEL="$EMBEDDED"
  elif [ -f "$CARRY/model-shape/config.json" ]; then MODEL="$CARRY/model-shape"; WEIGHTS="random-init"
  else echo "gpu_check.sh: no model: give --model DIR, or run --pack where the embedded model is" >&2; exit 2
  fi
fi
if ! ls "$MODEL"/*.safetensors >/dev/null 2>&1; then
  WEIGHTS="random-init"
  "$PYTHON" - "$MODEL" "$WORK/model" <<'EOF' || exit 1
import shutil, sys
from pathlib import Path
import torch
from transformers import AutoConfig, AutoModelForCausalLM
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src, dst)
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src)).save_pretrained(dst)
EOF
  MODEL="$WORK/model"
fi

LIMIT=150; [ -n "$CPU" ] && LIMIT=600   # seconds per phase; six phases stay under 8 minutes on a GPU
cat > "$WORK/fsdp1.yaml" <<EOF
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_machines: 1
num_processes: 1
machine_rank: 0
mixed_precision: $([ -n "$CPU" ] && echo "'no'" || echo bf16)
use_cpu: $([ -n "$CPU" ] && echo true || echo false)
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: LlamaDecoderLayer
  fsdp_reshard_after_forward: true
  fsdp_offload_params: false
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_cpu_ram_efficient_loading: false
  fsdp_activation_checkpointing: false
EOF

STARTED=$(date +%s)
for phase in sft rm dpo grpo fsdp dpo-0.5b; do
  if [ "$phase" = fsdp ]; then
    runner=("$PYTHON" -m accelerate.commands.launch --config_file "$WORK/fsdp1.yaml" --main_process_port 0)
  else
    runner=("$PYTHON")
  fi
  begin=$(date +%s)
  timeout "$LIMIT" "${runner[@]}" "$ROOT/bench/gpu_check.py" "$phase" --model "$MODEL" $CPU > "$WORK/$phase.log" 2>&1
  code=$?
  echo "$phase: exit $code in $(( $(date +%s) - begin )) s" >&2
  grep '^GPU-CHECK ' "$WORK/$phase.log" | tail -1 | cut -c11- > "$WORK/$phase.json"
  if [ ! -s "$WORK/$phase.json" ]; then
    tail -5 "$WORK/$phase.log" >&2
    "$PYTHON" -c 'import json, sys; print(json.dumps({"phase": sys.argv[1], "ok": False, "exit": int(sys.argv[2]),
      "error": open(sys.argv[3], errors="replace").read()[-1500:]}))' "$phase" "$code" "$WORK/$phase.log" \
      > "$WORK/$phase.json"
  fi
done

"$PYTHON" - "$WORK" "$OUT" "$WEIGHTS" "$MODEL" "$(( $(date +%s) - STARTED ))" "${CPU:-gpu}" "$ROOT" <<'EOF'
import json, platform, subprocess, sys
from datetime import UTC, datetime
from pathlib import Path
import torch
work, out, weights, model, seconds, mode, root = sys.argv[1:8]
phases = [json.loads((Path(work) / f"{p}.json").read_text()) for p in ("sft", "rm", "dpo", "grpo", "fsdp", "dpo-0.5b")]
commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip() or None  # None where the repository travelled without .git
report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "mode": mode.lstrip("-"),
          "machine": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
          "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
          "model": model, "weights": weights, "seconds": int(seconds), "commit": commit,
          "ok": all(p.get("ok") for p in phases), "phases": phases}
Path(out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
print(json.dumps({k: report[k] for k in ("mode", "gpu", "weights", "seconds", "ok")}))
EOF
