"""Content-addressed storage: CIDs, UnixFS/dag-pb DAGs, chunking, the LMDB block store,
pins and garbage collection (DESIGN §4).

Pure Python plus `lmdb`; never imports trio or libp2p. Import and export stream with
constant memory; CIDs are those `ipfs add` gives (v0) and `ipfs add --cid-version 1`.
"""
