"""The daemon as an operating-system process: configuration, identity file, pid file,
and logging set-up (the process entry point is overlay/runtime/run.py)."""
