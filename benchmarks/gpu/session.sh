#!/usr/bin/env bash
# One lent-GPU session (the `device` tool's machine: its own python3 with torch, timm, transformers,
# no GX, no pydantic, nothing to download), as one command from the repo root, results under $OUT:
#   1. training throughput of the config's model (benchmarks/gpu_throughput.py);
#   2. accuracy: photo pretraining, the fused and the image-only model, TF-IDF
#      (benchmarks/accuracy.py), on the real catalog.
# Prepared here by benchmarks/gpu/prepare.sh into .gpu/ (git-ignored), carried with the call (carry: [".gpu"]).
# Knobs (environment): CONFIG (default gpu; fashion runs fashion.yaml's CPU recipe on the GPU), CATALOG, SEEDS,
# BATCHES, WAYS, THROUGHPUT_S and ACCURACY_S (each part's time limit), ACCURACY_ARGS (more accuracy.py options).
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OUT=${OUT:-/tmp/kv-out}
mkdir -p "$OUT"
CATALOG=${CATALOG:-fashion-footwear}  # the name prepare.sh was given (its folder's name)
[ -d ".gpu/$CATALOG" ] || python3 -m zipfile -e ".gpu/$CATALOG.zip" .gpu/ || exit 1  # thousands of small files travel as one
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 - <<'PY' || exit 1
import pathlib, shutil, torch, timm, transformers, pandas, sklearn, numpy
from safetensors.torch import load_file, save_file
print("torch", torch.__version__, "timm", timm.__version__, "transformers", transformers.__version__,
      "pandas", pandas.__version__, "numpy", numpy.__version__, "sklearn", sklearn.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
src, dst = pathlib.Path(".gpu/minilm"), pathlib.Path("/tmp/minilm")
shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.bf16.safetensors"))
weights = load_file(src / "model.bf16.safetensors")
save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, dst / "model.safetensors")
PY
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm,clocks.max.sm --format=csv
COMMON=(--catalog "../.gpu/$CATALOG" --validated --config "${CONFIG:-gpu}" --set model.text_encoder.pretrained=/tmp/minilm)
cd benchmarks
timeout "${THROUGHPUT_S:-240}" python3 gpu_throughput.py "${COMMON[@]}" --batch-sizes ${BATCHES:-256 512} \
  --ways "${WAYS:-host loader,data on device,data on device in fp32,data on device + compile}" \
  --out "$OUT/gpu_throughput.json" 2>&1 | grep -v "Warning\|warn(" | tee "$OUT/gpu_throughput.log"
timeout "${ACCURACY_S:-280}" python3 accuracy.py "${COMMON[@]}" --seeds ${SEEDS:-42 7} --variants "fused,image only" \
  --photos pretrained ${ACCURACY_ARGS:-} --out "$OUT/accuracy_gpu.json" 2>&1 | grep -v "Warning\|warn(" | tee "$OUT/accuracy_gpu.log"
