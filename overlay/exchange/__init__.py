"""Block exchange: Bitswap 1.2.0 wire codec and a sans-IO want/serve engine."""
