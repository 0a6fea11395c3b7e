#!/usr/bin/env bash
# GPU timings for the README/issue notes, run on a lent GPU machine that has torch but no internet.
#
# Preparation on a CPU box (in the repo root; .whl/ is git-ignored via .git/info/exclude):
#   * wheels for nnU-Net v2 and its pure/compiled deps (Python 3.12, manylinux) in .whl/,
#     without SimpleITK (52 MB): .whl/stub/SimpleITK is an empty stand-in, enough because this
#     check trains from an already-preprocessed round and skips nnU-Net's NIfTI-writing validation;
#   * a round prepared with the `paper` segmentation plan (features 32..320, nnU-Net's own patch) in
#     .whl/prepared_paper: `python benchmarks/nnunet_overhead.py --profile paper --out DIR` on the CPU
#     box writes DIR/prepared (or prepare_round on any labelled folder).
# Then: bash benchmarks/gpu_check.sh  (writes logs and JSON under $OUT, default ./gpu_check_out)
set -uo pipefail
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.whl/stub PYTHONUNBUFFERED=1 COSMOS_NO_PROGRESS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
for profile in paper tiny; do
  timeout 100 python3 benchmarks/translator_speed.py --profile "$profile" --devices cuda --train-steps 20 \
    2>&1 | tee "$OUT/translator_$profile.log"
done
timeout 300 python3 benchmarks/nnunet_overhead.py --profile paper --prepared .whl/prepared_paper --no-validation \
  --repeats 1 --set segmentation.device=cuda --set segmentation.epochs=2 --set segmentation.iterations_per_epoch=250 \
  --set segmentation.val_iterations_per_epoch=50 --out /tmp/nnunet_gpu 2>&1 | tee "$OUT/nnunet_paper_gpu.log"
cp /tmp/nnunet_gpu/nnunet_overhead.json "$OUT/nnunet_paper_gpu.json" 2>/dev/null || true
