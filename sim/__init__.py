"""Deterministic discrete-event simulator that drives the real sans-IO cores (DESIGN §8)."""
