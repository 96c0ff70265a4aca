#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md, in one run (under 10 minutes on one H100/H200;
# BUDGET seconds in all, default 570):
#   bash benchmarks/gpu.sh OUTDIR
# 1. train.py + evaluate.py end to end on CUDA (synthetic data, 16-mixed training; evaluation in
#    float32 and with fast.autocast=bf16 fast.channels_last=true), results copied to OUTDIR;
# 2. benchmarks/overhead.py with DeepLabv3+ ResNet-101 (output stride 8) at 1024x2048;
# 3. the published networks (benchmarks/overhead.py --model): evaluation vs the bare rebuilt
#    module, NVIDIA's WideResNet38 and SML's ResNet-101 at 1024x2048 (untrained weights);
# 4. benchmarks/kernels.py (kNN selection and per-image AP kernels), if time is left.
set -u
OUT=${1:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"

if [ -z "${SKIP_E2E:-}" ]; then
timeout 100 $PY train.py trainer=gpu trainer.devices=1 trainer.max_steps=40 \
  hydra.run.dir=outputs/gpu/train 2>&1 | grep -v Warning | tail -n 5
for variant in fp32 bf16; do
  extra=""
  [ "$variant" = bf16 ] && extra="fast.autocast=bf16 fast.channels_last=true"
  timeout 75 $PY evaluate.py trainer=gpu trainer.devices=1 checkpoint=outputs/gpu/train/checkpoints/last.ckpt \
    "head=[max_softmax,entropy,max_logit,energy,mc_dropout]" $extra \
    hydra.run.dir=outputs/gpu/eval_$variant 2>&1 | grep -v Warning | tail -n 12
  cp outputs/gpu/eval_$variant/results.json "$OUT/e2e_$variant.json" 2>/dev/null
done
fi

timeout $(( ${BUDGET:-570} - SECONDS )) $PY benchmarks/overhead.py --device cuda --encoder resnet101 \
  --output-stride 8 --sizes 1024x2048 --batch 2 --batches 6 --repeats 2 --rounds 2 \
  --eval-heads max_softmax entropy max_logit energy sml mc_dropout gaussian knn knn@fp16 flow \
    void_classifier outlier_exposure \
  --multi-heads mc_dropout@T8 mc_dropout@T8-features mc_dropout@T32 gaussian knn knn@fp16 \
    knn@bf16 flow \
  --precision 32-true bf16-mixed 16-mixed --compile --json "$OUT/overhead_r101_1024x2048.json" \
  2>&1 | grep -v -i warn

for model in nvidia_wrn38 sml_r101_os8; do
  timeout $(( ${BUDGET:-570} - SECONDS )) $PY benchmarks/overhead.py --device cuda --model $model \
    --sizes 1024x2048 --batch 1 --batches 8 --repeats 3 --sections eval \
    --eval-heads max_softmax entropy --per-image-strides --json "$OUT/overhead_$model.json" \
    2>&1 | grep -v -i warn
done

timeout $(( ${BUDGET:-570} - SECONDS )) $PY benchmarks/kernels.py --device cuda 2>&1 | tee "$OUT/kernels.txt"
