"""The daemon as an operating-system process: configuration, identity file, pid file,
logging set-up, and the process entry point."""
