"""Tiny experiments for the runner's tests, importable by the runner's child processes.

A test writes a module ``toy_NAME.py`` containing ``EXPERIMENT = make("NAME", "MODE")``
into a folder on ``PYTHONPATH``; the runner's child imports it like a real experiment.
Every run appends its name to the file named by ``$TOY_CALLS`` (the child is another
process, so a list in the test would not see it) and, with ``$TOY_REPORT_SEEN``, appends
the ``$TOY_OUT/REPORT.md`` it finds at that moment there.
"""

from __future__ import annotations

import os
import pathlib
import threading

from experiments import _framework as fw

MODES = ("ok", "raise", "stall_jax")


def _stall_inside_compiled_code():
    """Blocks forever with the main thread inside an XLA executable (a host callback that
    never returns), like a deadlocked jaxlib kernel: no Python-level timeout reaches it."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    never = threading.Event()

    def callback(x):
        never.wait()
        return np.asarray(x)

    spec = jax.ShapeDtypeStruct((), jnp.float32)
    jax.jit(lambda x: jax.pure_callback(callback, spec, x))(jnp.float32(1)).block_until_ready()


def make(name: str, mode: str = "ok") -> fw.Experiment:
    assert mode in MODES, mode

    def run(config, progress):
        calls = os.environ.get("TOY_CALLS")
        if calls:
            with open(calls, "a") as f:
                f.write(name + "\n")
        seen = os.environ.get("TOY_REPORT_SEEN")
        if seen:
            report = pathlib.Path(os.environ["TOY_OUT"]) / "REPORT.md"
            with open(seen, "a") as f:
                f.write(f"--- seen by {name}\n")
                f.write(report.read_text() if report.exists() else "(no report)\n")
        if mode == "raise":
            raise RuntimeError(f"toy experiment {name} fails on purpose")
        if mode == "stall_jax":
            _stall_inside_compiled_code()
        return {"value": config["x"] * 2}

    def plot(result, path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, result["value"]])
        fw.atomic_save_figure(fig, path)
        plt.close(fig)

    return fw.Experiment(
        name=name, description=f"toy ({mode})", quick={"seed": 0, "x": 1},
        full={"seed": 0, "x": 10}, run=run, plot=plot,
        table=lambda r: f"| value |\n|---|\n| {r['value']} |",
        reading=lambda r: f"value is {r['value']}",
    )
