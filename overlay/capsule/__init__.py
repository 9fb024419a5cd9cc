"""Capsules (DESIGN §7), sans-IO: specs, placement, custody, leases, receipts, executor.

Entry point for the node: `overlay.capsule.core.CapsuleCore` (see its docstring for
the commands, messages, effects and events).
"""
