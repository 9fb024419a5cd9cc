"""The network: the transport adapter over our libp2p stack (or py-libp2p), frame
envelopes, per-peer send rate limits, streams over any byte stream, mDNS discovery."""
