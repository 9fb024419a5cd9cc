"""I/O side of the node: trio driver, libp2p adapter, control API, executors, files."""
