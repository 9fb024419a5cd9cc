"""The daemon's services: each glues one sans-IO part of the node to the real world
(capsules, colony trust, block fetch, custody durability) through narrow interfaces."""
