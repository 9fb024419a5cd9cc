"""The sans-IO kernel every core shares: ids, effects, errors, wire codec, crypto.

Nothing in this package reads a clock, touches a socket or draws from a global random
generator: callers pass `now` and an `rng`. See DESIGN.md §2.
"""
