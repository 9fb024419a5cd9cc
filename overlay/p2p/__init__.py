"""Colony's own libp2p wire: multistream-select, Noise XX, Yamux, identify, ping.

The data path of the transport adapter (overlay/runtime/net/transport.py) when
`[network] stack = "native"`: other libp2p implementations (go, js, rust,
py-libp2p) see an ordinary TCP + Noise + Yamux peer. Sans-IO pieces (no trio):
`pb`, `multiaddr`, `keys`, `multistream`, `noise`, `yamux`, `identify`. The trio
pieces are `connection` (a secured, muxed session over any trio byte stream) and
`host` (TCP listeners, dialling, protocol handlers, identify and ping).
"""
