#!/usr/bin/env bash
# Make (idempotently) .venv-peers/: the real peers of jaxkl.rl installed from the package registry,
# for the conformance harness (scripts/_peers.py, scripts/peers_smoke.py; issue 17 item 4).
#
#   bash scripts/peers_env.sh            # make or update .venv-peers/, then check the imports
#   .venv-peers/bin/python scripts/peers_smoke.py
#
# Pinned peers (scripts/peers-constraints.txt pins every installed distribution):
#   verl 0.9.1, trl 1.16.0, google-tunix 0.1.7, torch 2.13.0+cpu (the CPU wheel of that exact
#   version is on the build machines' local disk index; the registry's torch 2.13.0 is a CUDA build
#   of several GB: set PEERS_TORCH=torch==2.13.0 to accept it where the CPU wheel is missing),
#   transformers 5.10.4 (verl 0.9.1 wants >=5.5.3,<5.11), jax/jaxlib 0.10.2 (jaxkl's versions),
#   flax 0.12.8.
# Measured on the 2-core build machine, from nothing: 77 s with a warm pip cache, 107 s with none
# (PIP_NO_CACHE_DIR=1); 2.4 GiB on disk (site-packages: torch 754 MiB, jaxlib 349, ray 240,
# pyarrow 170, scipy 113, transformers 107, pandas 84, sympy 80).
#
# verl and google-tunix are installed with --no-deps and an explicit list of what their loss code
# needs to import on a CPU machine, because their full dependency sets are unreasonable here:
#   verl 0.9.1 declares ray[default], wandb, tensorboard, hydra-core, peft, torchdata, pybind11,
#     pylatexenc, codetiming, tensordict, transformers, datasets, dill ...; extras pull vllm /
#     sglang / flash-attn / cupy / megatron / torch 2.11.
#     Installed: ray (core only: verl/protocol.py imports ray at module level, via verl/__init__),
#     tensordict (verl.utils.torch_functional, verl/workers/utils/losses.py), omegaconf (configs),
#     codetiming and pillow (imported on the way to verl.trainer.ppo.core_algos), transformers.
#     Left out: ray's [default] extra (dashboard / cluster: aiohttp, grpcio, opencensus,
#     opentelemetry, prometheus, py-spy, virtualenv, smart_open), wandb and tensorboard
#     (loggers), hydra-core (CLI config composition; the adapters build verl's dataclass
#     configs directly), peft (LoRA), torchdata, pybind11, pylatexenc (math reward scoring),
#     and every GPU extra (vllm, sglang, flash-attn, cupy, megatron, triton, liger-kernel).
#   google-tunix 0.1.7 declares tensorflow_datasets, grain, orbax-checkpoint, kagglehub, numba,
#     hf_transfer, qwix, google-metrax, perfetto, sentencepiece, python-dotenv, tenacity, jaxtyping,
#     pylatexenc, importlib_resources, datasets, transformers, omegaconf ...; its "prod" extra
#     is jax[tpu].
#     Installed: jax, jaxlib (CPU), flax, and what `import tunix` (tunix/__init__.py imports the
#     whole library: sft, distillation, generate, rl) needs: google-metrax, jaxtyping,
#     sentencepiece, perfetto, transformers, omegaconf (orbax-checkpoint comes with flax).
#     Left out: tensorflow_datasets, grain (data loading), kagglehub, hf_transfer (model
#     download), numba, qwix (quantisation), python-dotenv, tenacity, pylatexenc,
#     importlib_resources; none is imported by tunix.rl.algo_core / common / grpo learners.
#   trl 1.16.0 is installed with its dependencies (accelerate, datasets, huggingface_hub,
#     pandas, pyarrow, transformers ...: all CPU wheels); its extras (vllm, deepspeed, peft,
#     liger, bitsandbytes ...) are not.
# `pip check` therefore lists the left-out requirements of verl and google-tunix: expected.
#
# Re-running is a no-op while this file and peers-constraints.txt are unchanged (a stamp in the
# venv records their hash); PEERS_FORCE=1 reinstalls into the existing venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
venv=.venv-peers
constraints=scripts/peers-constraints.txt
torch_req="${PEERS_TORCH:-torch==2.13.0+cpu}"
start=$(date +%s)

if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; assert (3, 11) <= sys.version_info[:2] < (3, 13), \
"the peers need Python 3.11 or 3.12 (verl 0.9.1: <3.13; google-tunix 0.1.7: >=3.11)"'
  "$python" -m venv "$venv"
fi
stamp="$venv/.peers-installed"
want="$( (cat scripts/peers_env.sh "$constraints"; echo "$torch_req") | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -z "${PEERS_FORCE:-}" ]; then
  echo "peers_env: $venv is up to date ($(du -sh "$venv" | cut -f1))"
  exit 0
fi

pip_install() {
  # The machines' pip configuration lists local file:// indexes; pip warns for every package they
  # lack ("... is neither a file nor a directory"): dropped, other messages pass.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$constraints" "$@" \
    2> >(grep -v "is neither a file nor a directory" >&2)
}
pip_install pip
# 1. Resolved with dependencies: torch (CPU), trl, and the explicit lists for verl and tunix.
pip_install "$torch_req" \
  trl==1.16.0 transformers \
  ray codetiming tensordict omegaconf pillow \
  jax jaxlib flax google-metrax jaxtyping sentencepiece perfetto
# 2. The two peers themselves, without their declared dependencies (see above).
pip_install --no-deps verl==0.9.1 google-tunix==0.1.7

# The loss code of all three must import on this CPU machine.
"$venv/bin/python" - <<'EOF'
import importlib.metadata as md
import verl.trainer.ppo.core_algos  # noqa: F401
import verl.workers.utils.losses  # noqa: F401
import trl.trainer.grpo_trainer  # noqa: F401
import tunix.rl.algo_core  # noqa: F401
import tunix.rl.grpo.grpo_learner  # noqa: F401
print("peers_env:", ", ".join(f"{d} {md.version(d)}" for d in
      ("verl", "trl", "google-tunix", "torch", "transformers", "jax", "flax")))
EOF
echo "$want" > "$stamp"
echo "peers_env: $venv ready in $(( $(date +%s) - start )) s, $(du -sh "$venv" | cut -f1) on disk"
