"""SWIM + Lifeguard membership, dissemination, resource ads and user events (sans-IO).

The core is `gossip.swim.Swim`; see docs/gossip.md for the protocol, the wire format
and the driver contract. Nothing in this package reads a clock, draws from the global
random generator or does I/O.
"""
