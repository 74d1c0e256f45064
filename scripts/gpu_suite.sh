#!/usr/bin/env bash
# The accelerator run: every benchmark (scripts/bench_*.py), the large estimates, and the
# full-size experiments, with their outputs and the device description in one folder.
#
# Usage: bash scripts/gpu_suite.sh [OUT_DIR]      (default: outputs/gpu-<date>-<time>)
# Environment: JAX_CUDA_EXTRA (default cuda12) picks the jax[...] extra installed when JAX
# does not see a GPU yet; SKIP_EXPERIMENTS=1 runs the benchmarks only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "${1:-$root/outputs/gpu-$(date +%Y%m%d-%H%M%S)}")"
bash "$root/scripts/setup.sh"
cd "$root"
py=.venv/bin/python
on_gpu() { "$py" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; }
if ! on_gpu; then
  # The CUDA plugin matching the pinned jax, so that results are for the tested version.
  version="$("$py" -c 'import jax; print(jax.__version__)')"
  "$py" -m pip install --quiet -c constraints.txt "jax[${JAX_CUDA_EXTRA:-cuda12}]==$version"
fi
on_gpu || { echo "JAX sees no GPU: $("$py" -c 'import jax; print(jax.devices())')" >&2; exit 1; }
mkdir -p "$out"
{
  date -u +%FT%TZ
  git rev-parse HEAD 2>/dev/null || true
  nvidia-smi || true
  "$py" -c 'import jax, jaxlib; print("jax", jax.__version__, "jaxlib", jaxlib.__version__); print(jax.devices())'
} > "$out/device.txt" 2>&1
ngpu="$("$py" -c 'import jax; print(jax.device_count())')"

failed=()
run() {  # run NAME COMMAND...: tee the output into OUT_DIR/NAME.txt; a failure is noted, not fatal
  local name="$1"; shift
  echo "== $name: $*" | tee "$out/$name.txt"
  "$@" 2>&1 | tee -a "$out/$name.txt" || failed+=("$name")
}
for bench in scripts/bench_*.py; do
  name="$(basename "$bench" .py)"
  if [ "$name" = bench_sharding ]; then
    run "$name" "$py" "$bench" --devices $(seq 1 "$ngpu") --big 1e8 1e9 2e9 --json "$out/$name.json"
  else
    run "$name" "$py" "$bench"
  fi
done
run bench_estimate_1e9 "$py" scripts/bench_estimate.py --num-samples 1e9
if [ "${SKIP_EXPERIMENTS:-0}" != 1 ]; then
  run experiments_full "$py" -m experiments all --full --force --out "$out/experiments"
fi
echo "outputs in $out"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed: ${failed[*]}" | tee "$out/FAILED.txt" >&2
  exit 1
fi
