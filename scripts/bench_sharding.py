"""Benchmark: sharded estimate() against the device count, the single-device overhead, 1e9.

Three measurements, each in a fresh subprocess so that the device count (forced host
platform devices on CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count``) and the
peak resident memory (``ru_maxrss``) are its own:

1. single device, before/after sharding support: ``jaxkl.estimate`` against
   ``jaxkl.sharding.estimate_sharded`` on a one-device mesh, same key and samples,
   interleaved repetitions, medians and their ratio (> 1: the sharded path is slower);
2. samples per second of ``estimate_sharded`` on meshes of 1, 2, ... devices of one
   process (``--devices 1 2``); on CPU the forced devices share the machine's cores, so
   the speed-up is bounded by the cores free for the run;
3. ``--big`` estimates (default 1e8 and 1e9 samples) over all devices in one process,
   their times, results and the process's peak memory after each, next to the peak
   after a 1e6-sample warm-up: constant memory means the peaks stop growing.

Usage (absolute times on a shared machine are noise; compare the ratios):

    .venv/bin/python scripts/bench_sharding.py [--num-samples 1e7] [--repeats 7]
        [--devices 1 2] [--big 1e8 1e9] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ESTIMATORS = ("k1", "k2", "k3")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup():
    import distrax
    import jax

    q, p = distrax.Normal(0.1, 1.0), distrax.Normal(0.0, 1.0)
    return jax, q, p, jax.random.key(0)


def _timed(fn) -> float:
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def single_device(num_samples: int, repeats: int) -> dict:
    """Plain estimate vs the sharded path on a one-device mesh, interleaved."""
    jax, q, p, key = _setup()
    import jaxkl
    from jaxkl.sharding import device_mesh, estimate_sharded

    mesh = device_mesh(jax.devices()[:1])
    candidates = {
        "estimate": lambda: jaxkl.estimate(q, p, key=key, num_samples=num_samples,
                                           estimators=ESTIMATORS),
        "estimate_sharded(1 device)": lambda: estimate_sharded(
            q, p, key=key, num_samples=num_samples, estimators=ESTIMATORS, mesh=mesh),
    }
    first = {name: _timed(fn) for name, fn in candidates.items()}
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            times[name].append(_timed(fn))
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "num_samples": num_samples, "first_call_s": first, "median_s": medians,
        "sharded_over_plain": medians["estimate_sharded(1 device)"] / medians["estimate"],
    }


def scaling(num_samples: int, repeats: int, device_counts: list[int]) -> dict:
    """Samples per second of estimate_sharded on meshes of the first d devices."""
    jax, q, p, key = _setup()
    from jaxkl.sharding import device_mesh, estimate_sharded

    def run_on(mesh):
        return lambda: estimate_sharded(q, p, key=key, num_samples=num_samples,
                                        estimators=ESTIMATORS, mesh=mesh)

    device_counts = [d for d in device_counts if d <= jax.device_count()]
    runs = {d: run_on(device_mesh(jax.devices()[:d])) for d in device_counts}
    for fn in runs.values():
        _timed(fn)
    times = {d: [] for d in runs}
    for _ in range(repeats):
        for d, fn in runs.items():
            times[d].append(_timed(fn))
    medians = {d: statistics.median(t) for d, t in times.items()}
    base = medians[device_counts[0]]
    return {
        "num_samples": num_samples,
        "per_devices": {str(d): {"median_s": s, "samples_per_s": num_samples / s,
                                 "speedup": base / s} for d, s in medians.items()},
    }


def big(sizes: list[int]) -> dict:
    """Large estimates over all devices, in one process: time and peak memory after each."""
    jax, q, p, key = _setup()
    from jaxkl.sharding import estimate_sharded

    jax.block_until_ready(estimate_sharded(q, p, key=key, num_samples=1_000_000))
    truth = float(q.kl_divergence(p))
    runs = [{"num_samples": 1_000_000, "peak_rss_mb": _peak_rss_mb()}]
    for n in sizes:
        start = time.perf_counter()
        res = jax.block_until_ready(estimate_sharded(q, p, key=key, num_samples=n))
        seconds = time.perf_counter() - start
        k3 = res["k3"]
        runs.append({
            "num_samples": n, "seconds": seconds, "samples_per_s": n / seconds,
            "peak_rss_mb": _peak_rss_mb(), "k3_mean": float(k3.mean),
            "k3_stderr": float(k3.stderr), "count": int(k3.count),
            "k3_error_in_stderr": (float(k3.mean) - truth) / float(k3.stderr),
        })
    return {"devices": jax.device_count(), "kl_true": truth, "runs": runs}


def _subprocess(args: list[str], devices: int) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    proc = subprocess.run([sys.executable, __file__, "--worker", *args], env=env,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=float, default=1e7)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--big", type=float, nargs="*", default=[1e8, 1e9],
                        help="large runs, in one process (none: skip)")
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind, *rest = args.worker
        if kind == "single":
            out = single_device(int(float(rest[0])), int(rest[1]))
        elif kind == "scaling":
            out = scaling(int(float(rest[0])), int(rest[1]), [int(d) for d in rest[2:]])
        else:
            out = big([int(float(n)) for n in rest])
        import jax

        out["device"] = str(jax.devices()[0])
        out["device_kind"] = jax.devices()[0].device_kind
        print(json.dumps(out))
        return

    n = int(args.num_samples)
    # On an accelerator, forced host devices change nothing: the real devices are used.
    most = max(args.devices)
    report = {"machine": platform.machine(), "cpus": os.cpu_count(),
              "python": sys.version.split()[0]}
    report["single_device"] = _subprocess(["single", str(n), str(args.repeats)], devices=1)
    report["scaling"] = _subprocess(["scaling", str(n), str(args.repeats),
                                     *map(str, args.devices)], devices=most)
    if args.big:
        report["big"] = _subprocess(["big", *(str(int(n)) for n in args.big)], devices=most)
    import jax

    report["jax"] = jax.__version__

    single = report["single_device"]
    print(f"device: {single['device_kind']} ({single['device']}), jax {jax.__version__}, "
          f"{report['cpus']} CPUs")
    print(f"\n1. single device, {n:.0e} samples, median of {args.repeats}:")
    for name, s in single["median_s"].items():
        print(f"   {name:28s} {s * 1e3:9.1f} ms  ({n / s / 1e6:7.1f} M samples/s)")
    print(f"   ratio sharded / plain = {single['sharded_over_plain']:.3f}")
    print(f"\n2. estimate_sharded against devices, {n:.0e} samples:")
    for d, row in report["scaling"]["per_devices"].items():
        print(f"   {d} device(s): {row['median_s'] * 1e3:9.1f} ms  "
              f"{row['samples_per_s'] / 1e6:7.1f} M samples/s  speed-up {row['speedup']:.2f}")
    if args.big:
        b = report["big"]
        print(f"\n3. large estimates on {b['devices']} device(s) (true KL {b['kl_true']:.6f}):")
        print(f"   after 1e6 samples: peak RSS {b['runs'][0]['peak_rss_mb']:.0f} MB")
        for r in b["runs"][1:]:
            print(f"   {r['num_samples']:.0e}: {r['seconds']:6.1f} s "
                  f"({r['samples_per_s'] / 1e6:5.1f} M samples/s), k3 = {r['k3_mean']:.7f} "
                  f"+- {r['k3_stderr']:.1e} ({r['k3_error_in_stderr']:+.1f} stderr), "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB")
    print(json.dumps(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
