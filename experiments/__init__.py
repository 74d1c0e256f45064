"""Experiment scripts: one module per figure or table, run with ``python -m experiments``.

See ``experiments/_framework.py`` for the protocol every module follows.
"""
