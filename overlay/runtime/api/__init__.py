"""The control API: the HTTP server, its routes by area, Prometheus metrics, and the
synchronous client the CLI uses."""
