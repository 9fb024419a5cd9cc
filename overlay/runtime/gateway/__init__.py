"""The trustless HTTP gateway (docs/gateway.md): `GET /ipfs/CID[/path]` as raw blocks,
CAR streams, files and directory listings, read-only, off by default."""
