"""Colony: a peer-to-peer overlay node (Kademlia DHT, SWIM gossip, LMDB blocks, capsules)."""

__version__ = "0.1.0"
