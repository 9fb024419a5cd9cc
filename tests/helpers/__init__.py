"""Helpers shared by the unit, property and simulation tests.

Importable as `helpers.*` (pytest's `pythonpath` holds `tests/`). `core_net.CoreNet`
wires sans-IO cores back to back with no sockets.
"""
