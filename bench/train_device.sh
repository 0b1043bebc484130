#!/usr/bin/env bash
# The JAX training figures on the GPU machine the `device` tool lends (an H200 with JAX and PyTorch,
# no TensorFlow, no package registry), prepared and tried on this machine first.
#
#   bash bench/train_device.sh prepare     # here: the wheels the GPU machine lacks -> bench/device-wheels/
#   run(command="bash bench/train_device.sh", carry=["bench/device-wheels"], timeout_s=540)
#
# What it carries: keras, namex, optree and msgspec (KINDS.md's package list has the rest: jax, numpy,
# pillow, pandas, pyarrow, click, tqdm, opencv, absl-py, rich, h5py, ml-dtypes), about 3 MB, built for
# the machine's Python 3.12 (DEVICE_PY to change it), plus the project's source, which travels as the
# working tree. On the machine it installs the wheels into a folder on PYTHONPATH (no venv: the
# machine's python3 is itself a venv, and a venv of it would not see its packages), then runs
# `bench/train.py --backend jax`: the full-width stylegan-512x256 networks at 256x128 and 512x256,
# float32 and mixed_bfloat16, NVlabs' minibatches and 32. The figures go to $OUT/train_jax.jsonl, the
# printed lines to $OUT/train_jax.log. `timeout` ends the bench at BUDGET seconds (default 450) so the
# call stays under 8 minutes of device time with the machine's start; the lines written by then stay.
#
# Tried here without a GPU: DEVICE_PY=3.11 bash bench/train_device.sh prepare, then
# PYTHON=.venv/bin/python OUT=/tmp/out bash bench/train_device.sh (it runs the CPU part).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=bench/device-wheels
PY=${PYTHON:-python3}

if [ "${1:-}" = prepare ]; then
  V=${DEVICE_PY:-3.12}
  LOCAL=${LOCAL_PY:-.venv/bin/python}
  # the versions this checkout runs and tests with
  pins=$("$LOCAL" - <<'PY'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ("keras", "namex", "optree", "msgspec")))
PY
)
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  "$LOCAL" -m pip download -q --only-binary=:all: --no-deps --python-version "$V" --implementation cp \
    --abi "cp${V/./}" --abi abi3 --abi none --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any -d "$WHEELS" $pins
  ls -l "$WHEELS"
  du -sh "$WHEELS"
  exit 0
fi

OUT=${OUT:-/tmp/train-device-out}
BUDGET=${BUDGET:-450}
mkdir -p "$OUT"
if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  echo "train_device.sh: no wheels in $WHEELS; run 'bash bench/train_device.sh prepare' here first and carry them" >&2
  exit 2
fi
SITE=$(mktemp -d)
"$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax
{ nvidia-smi || true; "$PY" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"; } \
  > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
rc=0
timeout "$BUDGET" "$PY" bench/train.py --backend jax --steps "${STEPS:-20}" --rounds "${ROUNDS:-3}" \
  --json "$OUT/train_jax.jsonl" 2>&1 | tee "$OUT/train_jax.log" || rc=$?
echo "train_device.sh: bench exit $rc; figures in $OUT/train_jax.jsonl"
exit "$rc"
