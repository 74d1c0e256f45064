"""jaxkl.sharding: sharded estimates and sweeps equal their single-device counterparts.

The multi-device checks run in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (tests/_sharding_worker.py), so
this process keeps its single device; the worker returns numbers and the assertions are
made here. The two-process ``jax.distributed`` run uses gloo CPU collectives on
127.0.0.1. Every subprocess is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl
from jaxkl import sharding

WORKER = pathlib.Path(__file__).with_name("_sharding_worker.py")
ROOT = WORKER.parent.parent
TIMEOUT_S = 240
# Sums over ~1e5 float32 samples merged in another order: relative rounding well below this.
RTOL = 1e-5


def _env(device_count: int | None) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    if device_count is not None:
        flags.append(f"--xla_force_host_platform_device_count={device_count}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"worker printed no result:\n{stdout[-2000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    proc = subprocess.run([sys.executable, str(WORKER), "devices"], env=_env(8), cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _result(proc.stdout)


def _assert_same_stats(got: dict, want: dict, rtol: float = RTOL):
    assert got.keys() == want.keys()
    for name in want:
        assert got[name]["count"] == want[name]["count"], name
        for field in ("mean", "std", "stderr"):
            np.testing.assert_allclose(got[name][field], want[name][field], rtol=rtol,
                                       err_msg=f"{name}.{field}")


@pytest.mark.parametrize("mesh", ["1", "2", "8", "2x4", "3"])
def test_sharded_estimate_equals_single_device_estimate(eight_devices, mesh):
    """Same key, 100003 samples (not a multiple of 4096 * devices): same statistics.

    Meshes 2x4 and 3 take 2 and 1 chunks per device and call, so the host loops over
    2 and 9 blocks."""
    _assert_same_stats(eight_devices["sharded"][mesh], eight_devices["single"])
    assert eight_devices["sharded"][mesh]["k3"]["count"] == 100_003
    assert eight_devices["replicated"][mesh]


def test_sharded_estimate_matches_closed_form(eight_devices):
    """KL(N(0,1) || N(0.7,1.3)) (distrax's closed form) within 5 stderr, k1 and k3."""
    truth = eight_devices["kl_closed_form"]
    for name in ("k1", "k3", "cv*"):
        s = eight_devices["sharded"]["8"][name]
        assert abs(s["mean"] - truth) <= 5 * s["stderr"], name


def test_devices_without_chunks_contribute_nothing(eight_devices):
    """5000 samples in chunks of 4096 on 8 devices: six devices have no chunk at all."""
    _assert_same_stats(eight_devices["few_sharded"], eight_devices["few_single"])
    assert eight_devices["few_sharded"]["k3"]["count"] == 5000


def test_raw_keys_callables_and_non_pytree_distributions(eight_devices):
    _assert_same_stats(eight_devices["odd_sharded"], eight_devices["odd_single"])


def test_sharded_estimate_under_jit(eight_devices):
    _assert_same_stats(eight_devices["jitted"],
                       {k: eight_devices["single"][k] for k in ("k1", "k2", "k3")})


def test_sharded_estimate_float64(eight_devices):
    """Under x64 the results are float64 and agree to float64 rounding."""
    assert eight_devices["x64_dtype"] == "float64"
    _assert_same_stats(eight_devices["x64_sharded"], eight_devices["x64_single"], rtol=1e-12)
    # float64 draws other samples than float32; both estimate the same KL.
    s = eight_devices["x64_sharded"]["k3"]
    assert abs(s["mean"] - eight_devices["kl_closed_form"]) <= 5 * s["stderr"]


@pytest.mark.parametrize("mesh", ["8", "2x4"])
def test_sharded_sweep_of_fits_equals_vmap(eight_devices, mesh):
    """Five optax fits (separation sweep) split over devices equal jax.vmap's."""
    got, want = eight_devices["sweep"][mesh], eight_devices["sweep_reference"]
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=1e-6)
    assert np.shape(got[1]) == (5, 150)


def test_jitted_sharded_sweep_equals_vmap(eight_devices):
    got, want = eight_devices["sweep_jitted"], eight_devices["sweep_reference"]
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=1e-6)


def test_sharded_sweep_of_library_fits_equals_vmap(eight_devices):
    """jaxkl.fit over a separation sweep: sharded over 8 devices == jax.vmap."""
    got, want = eight_devices["fit_sweep"], eight_devices["fit_sweep_reference"]
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=1e-6)


def test_sweep_of_estimates_equals_loop(eight_devices):
    np.testing.assert_allclose(eight_devices["estimate_sweep"], eight_devices["estimate_loop"],
                               rtol=RTOL)


def test_placement_assertions_reject_misplaced_arrays(eight_devices):
    assert eight_devices["placement_rejected"] == {
        "split_as_replicated": True,
        "split_as_split": False,
        "copied_as_replicated": False,
        "one_device_on_mesh8": True,
        "wrong_single_device": True,
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_jax_distributed_compute_one_estimate():
    """Two processes (one CPU device each) joined by jax.distributed and gloo collectives
    compute one sharded estimate, equal on both and equal to the one-device estimate."""
    port = _free_port()
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), "distributed", str(port), str(i)],
                         env=_env(None), cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT_S))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    codes = [proc.returncode for proc in procs]
    if 3 in codes:
        reason = next(err for (_, err), c in zip(outputs, codes, strict=True) if c == 3).strip()
        pytest.skip(reason.splitlines()[-1])
    assert codes == [0, 0], "\n".join(err[-3000:] for _, err in outputs)
    results = [_result(out) for out, _ in outputs]
    assert [r["process_index"] for r in results] == [0, 1]
    for r in results:
        assert (r["process_count"], r["device_count"], r["local_device_count"]) == (2, 2, 1)
        _assert_same_stats(r["sharded"], r["single"])
    _assert_same_stats(results[0]["sharded"], results[1]["sharded"], rtol=0)


# In-process checks: one device.


def test_one_device_mesh_matches_estimate_and_is_on_the_device():
    q, p = distrax.Normal(0.0, 1.0), distrax.Normal(0.4, 1.0)
    kwargs = dict(key=jax.random.key(0), num_samples=30_001, chunk_size=1024)
    mesh = sharding.device_mesh(jax.devices()[:1])
    got = sharding.estimate_sharded(q, p, mesh=mesh, **kwargs)
    want = jaxkl.estimate(q, p, **kwargs)
    for name in want:
        np.testing.assert_allclose(got[name].mean, want[name].mean, rtol=RTOL)
        np.testing.assert_allclose(got[name].std, want[name].std, rtol=RTOL)
        assert int(got[name].count) == 30_001
        assert got[name].mean.devices() == {jax.devices()[0]}


def test_one_device_in_several_calls_matches_estimate():
    """chunks_per_call=3 on one device: 30 chunks in 10 host-level calls."""
    q, p = distrax.Normal(0.0, 1.0), distrax.Normal(0.4, 1.0)
    kwargs = dict(key=jax.random.key(1), num_samples=30_000, chunk_size=1000)
    got = sharding.estimate_sharded(q, p, chunks_per_call=3, **kwargs)
    want = jaxkl.estimate(q, p, **kwargs)
    for name in want:
        np.testing.assert_allclose(got[name].mean, want[name].mean, rtol=RTOL)
        np.testing.assert_allclose(got[name].std, want[name].std, rtol=RTOL)
        assert int(got[name].count) == 30_000


def test_sharded_vmap_pytrees_and_shared_arguments():
    fn = lambda params, scale: {"out": params["a"] * scale + params["b"].sum()}
    params = {"a": jnp.arange(3.0), "b": jnp.ones((3, 2))}
    got = sharding.sharded_vmap(fn, in_axes=(0, None))(params, jnp.asarray(2.0))
    want = jax.vmap(fn, in_axes=(0, None))(params, jnp.asarray(2.0))
    np.testing.assert_array_equal(got["out"], want["out"])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_sharded_vmap_keeps_dtypes(dtype):
    got = sharding.sharded_vmap(lambda x: x * 2)(jnp.ones(4, dtype))
    assert got.dtype == dtype


def test_sharded_vmap_float64(x64):
    got = sharding.sharded_vmap(jnp.log1p)(jnp.array([1e-20, 1.0]))
    assert got.dtype == jnp.float64
    np.testing.assert_array_equal(got, np.log1p(np.array([1e-20, 1.0])))


def test_bad_arguments_raise_clear_errors():
    q, p = distrax.Normal(0.0, 1.0), distrax.Normal(0.4, 1.0)
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="`mesh`"):
        sharding.estimate_sharded(q, p, key=key, num_samples=10, mesh="cpu")
    with pytest.raises(ValueError, match="`num_samples`"):
        sharding.estimate_sharded(q, p, key=key, num_samples=0)
    with pytest.raises(ValueError, match="estimator"):
        sharding.estimate_sharded(q, p, key=key, num_samples=10, estimators=("k9",))
    with pytest.raises(TypeError, match="`key`"):
        sharding.estimate_sharded(q, p, key=jnp.zeros(3), num_samples=10)
    with pytest.raises(TypeError, match="`q`"):
        sharding.estimate_sharded(object(), p, key=key, num_samples=10)
    with pytest.raises(ValueError, match="`chunks_per_call`"):
        sharding.estimate_sharded(q, p, key=key, num_samples=10, chunks_per_call=0)
    with pytest.raises(ValueError, match="`devices`"):
        sharding.device_mesh([])
    with pytest.raises(TypeError, match="`devices`"):
        sharding.device_mesh(["cpu:0"])
    with pytest.raises(TypeError, match="`fn`"):
        sharding.sharded_vmap(3)
    with pytest.raises(ValueError, match="`in_axes`"):
        sharding.sharded_vmap(jnp.sin, in_axes=1)
    with pytest.raises(ValueError, match="`in_axes`"):
        sharding.sharded_vmap(jnp.sin, in_axes=None)
    with pytest.raises(ValueError, match="`in_axes`"):
        sharding.sharded_vmap(lambda a, b: a, in_axes=(0,))(jnp.ones(2), jnp.ones(2))
    with pytest.raises(ValueError, match="leading axis"):
        sharding.sharded_vmap(lambda a, b: a)(jnp.ones(2), jnp.ones(3))
    with pytest.raises(ValueError, match="leading axis"):
        sharding.sharded_vmap(jnp.sin)(jnp.ones(()))


def test_estimate_mesh_option_delegates_to_the_sharded_path():
    q, p = distrax.Normal(0.0, 1.0), distrax.Normal(0.4, 1.0)
    key = jax.random.key(11)
    plain = jaxkl.estimate(q, p, key=key, num_samples=50_000, chunk_size=4096)
    meshed = jaxkl.estimate(q, p, key=key, num_samples=50_000, chunk_size=4096,
                            mesh=jaxkl.sharding.device_mesh())
    for name in plain:
        assert int(meshed[name].count) == int(plain[name].count)
        np.testing.assert_allclose(float(meshed[name].mean), float(plain[name].mean), rtol=1e-5)
