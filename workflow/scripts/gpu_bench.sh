#!/usr/bin/env bash
# Train and bench the PyTorch baselines on a GPU machine, without Snakemake or TensorFlow.
#
#   workflow/scripts/gpu_bench.sh [--device gpu|cpu] [--scale S] [--epochs E] [--batches N]
#                                 [--datasets "amazon-670k delicious-200k"] [--losses "full sampled"]
#                                 [--threads T] [--data-root data] [--results results] [--set key=value ...]
#
# For each dataset: generates the synthetic stand-in once (`slide data synth`, into
# <data-root>/synth/<like>-synth<scale>, the pipeline's own path), then for each loss
#   * trains torch-<loss>-<device> with the paper preset (batch 128, hidden [128], lr 1e-4) and writes
#     <results>/<like>-synth<scale>/torch-<loss>-<device>/seed0/{curve.csv,run.json,model.npz}
#     (the layout the report reads; run.json's method_stats.device names the GPU), and
#   * benches it: <results>/gpu-bench/<like>-s<scale>/torch-<loss>-<device>.json.
# It also writes <results>/gpu-bench/machine.txt (GPU model, driver, torch and CUDA versions, load).
# Defaults: --device gpu, --scale 1 (the paper's shapes), --epochs 1, --batches 50.
# Needs: python with numpy, numba, PyTorch and this package importable (`pip install -e . --no-deps`
# plus those, or the venv); set PYTHON to choose the interpreter. --device cpu runs the same steps on
# the CPU (how it is tested where there is no GPU). Exits non-zero on the first failed step.
# Copy <results>/<like>-synth<scale>/torch-*-gpu/ back to a CPU machine's results/ and its pipeline
# reports those runs (named with the GPU machine, outside the verdict) when the preset's datasets
# match and the methods are enabled; for the default preset's stand-ins, e.g.
#   gpu_bench.sh --datasets amazon-670k --scale 0.075 --epochs 12 --set lr=0.001
#   gpu_bench.sh --datasets delicious-200k --scale 0.25 --epochs 4 --set lr=0.003
# (the default preset adds --set num_true=64 for sampled softmax on Delicious).
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
device=gpu scale=1 epochs=1 batches=50 threads=0 data_root=data results=results
datasets="amazon-670k delicious-200k" losses="full sampled"
sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --datasets) datasets=$2; shift 2 ;;
    --losses) losses=$2; shift 2 ;;
    --data-root) data_root=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu_bench.sh: error: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$device" in cpu|gpu) ;; *) echo "gpu_bench.sh: error: --device must be cpu or gpu" >&2; exit 2 ;; esac

# one line, before any work, when PyTorch or the GPU is missing
"$PYTHON" - "$device" <<'PY'
import sys
from slide.errors import SlideError
try:
    from baselines.torch.device import device_for
    device_for(sys.argv[1])
except SlideError as err:
    sys.exit(f"gpu_bench.sh: error: {err}")
PY

scale_tag=$("$PYTHON" -c "import sys; print(f'{float(sys.argv[1]):g}')" "$scale")
bench_root="$results/gpu-bench"
mkdir -p "$bench_root"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname)"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    | sed 's/^/gpu: /' || true
  "$PYTHON" -c "import torch; print('torch:', torch.__version__, 'cuda:', torch.version.cuda, 'device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
} > "$bench_root/machine.txt"
cat "$bench_root/machine.txt" >&2

for like in $datasets; do
  dataset="$like-synth$scale_tag"
  folder="$data_root/synth/$dataset"
  if [ ! -f "$folder/train.txt" ] || [ ! -f "$folder/test.txt" ]; then
    echo "== synthesising $dataset into $folder" >&2
    "$PYTHON" -m slide.cli data synth --like "$like" --scale "$scale" --seed 0 --out "$folder"
  fi
  for loss in $losses; do
    method="torch-$loss-$device"
    out="$results/$dataset/$method/seed0"
    echo "== train $method on $dataset -> $out" >&2
    "$PYTHON" -m baselines.torch train --loss "$loss" --device "$device" --preset "$like" \
      --train "$folder/train.txt" --test "$folder/test.txt" --dataset "$dataset" --out "$out" \
      --epochs "$epochs" --threads "$threads" --seed 0 --resume ${sets[@]+"${sets[@]}"}
    mkdir -p "$bench_root/$like-s$scale_tag"
    echo "== bench $method at the $like shape (scale $scale_tag)" >&2
    "$PYTHON" -m baselines.torch bench --loss "$loss" --device "$device" --like "$like" --scale "$scale" \
      --batches "$batches" --threads "$threads" --data-root "$data_root" ${sets[@]+"${sets[@]}"} \
      > "$bench_root/$like-s$scale_tag/$method.json"
  done
done
echo "gpu_bench.sh: done; runs under $results/<dataset>/torch-*-$device/seed0, bench JSON under $bench_root" >&2
