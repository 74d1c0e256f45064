"""jaxkl's implementation; the public API is ``jaxkl`` and its public submodules."""
