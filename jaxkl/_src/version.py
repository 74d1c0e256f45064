"""jaxkl's version, in one place: pyproject.toml reads it (``tool.setuptools.dynamic``)
and :data:`jaxkl.__version__` re-exports it."""

__version__ = "0.3.2"
