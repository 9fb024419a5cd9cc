"""`colony …` commands: thin layers that parse, call the store/API, and render."""
