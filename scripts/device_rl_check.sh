#!/usr/bin/env bash
# The jaxkl.rl accelerator check, sized for a short lease on a machine that cannot
# install from a registry: the rl tests, then the hidden-state, token_kl, full_kl and
# Monte Carlo benchmarks, each output teed into OUT_DIR. Uses the machine's own python3 (its jax with the accelerator
# plugin, chex, optax, numpy, scipy, pytest); jaxkl's other dependencies, which such an
# image may lack (distrax and tfp-nightly with theirs), come from wheels in .whl/ that
# `bash scripts/device_rl_check.sh --fetch` downloads here beforehand.
#
# Usage: bash scripts/device_rl_check.sh --fetch        (here, with a registry: fill .whl/)
#        bash scripts/device_rl_check.sh [OUT_DIR]      (there; default $OUT, else outputs/device)
# Environment: PYTHON (default python3), WHEEL_PYTHON_VERSION (default 3.12, the device's).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
wheels=(distrax==0.1.9 tfp-nightly==0.26.0.dev20261027 dm-tree==0.1.10 gast==0.7.0
        decorator==5.3.1 six==1.17.0 cloudpickle==3.1.3)

if [ "${1:-}" = --fetch ]; then
  rm -rf .whl
  "$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version "${WHEEL_PYTHON_VERSION:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${wheels[@]}"
  ls .whl
  exit 0
fi

out="$(realpath -m "${1:-${OUT:-$root/outputs/device}}")"
mkdir -p "$out"
if ! "$python" -c 'import distrax' 2>/dev/null; then
  [ -d .whl ] || { echo "distrax is missing and there is no .whl/: run --fetch first" >&2; exit 2; }
  site="$(mktemp -d)"
  "$python" -m pip install --quiet --no-index --no-deps --no-compile --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$python" -c 'import jax, jaxlib; print("jax", jax.__version__, "jaxlib", jaxlib.__version__,
jax.default_backend(), jax.devices())' | tee "$out/device.txt"
nvidia-smi >> "$out/device.txt" 2>&1 || true

status=0
run() {  # run NAME COMMAND...: output into OUT_DIR/NAME.txt; a failure is noted, not fatal
  local name="$1"; shift
  echo "== $name: $*" | tee "$out/$name.txt"
  "$@" 2>&1 | tee -a "$out/$name.txt" || { echo "FAILED: $name" | tee -a "$out/$name.txt"; status=1; }
}
# Each step under its own limit (seconds), so that one slow step cannot eat the lease.
run tests_rl timeout 240 "$python" -m pytest -q -x -p no:cacheprovider -o addopts="" \
  tests/test_rl_token_kl.py tests/test_rl_aggregate.py tests/test_rl_full_kl.py \
  tests/test_rl_logits.py tests/test_rl_hidden.py
run bench_hidden_bf16 timeout 120 "$python" scripts/bench_hidden.py --tokens 32768 --dim 1024 \
  --vocab 152064 --dtype bfloat16 --reps 3
run bench_token_kl timeout 60 "$python" scripts/bench_token_kl.py --batch 4096 --length 4096 \
  --reps 30
run bench_full_kl_bf16 timeout 60 "$python" scripts/bench_full_kl.py --reps 10
run bench_full_kl_f32 timeout 60 "$python" scripts/bench_full_kl.py --reps 10 --dtype float32
run bench_estimate timeout 60 "$python" scripts/bench_estimate.py --num-samples 1e8
echo "outputs in $out"
exit "$status"
