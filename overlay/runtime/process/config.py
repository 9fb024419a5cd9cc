"""Node configuration: TOML file < environment < command-line flags.

Every key has a default in `DEFAULTS`; the type of the default is the type a value
must have. Unknown sections or keys are errors (a typo should not silently fall back
to a default). Environment overrides are `COLONY_<SECTION>_<KEY>`, e.g.
`COLONY_API_LISTEN=127.0.0.1:5200`; lists in the environment are comma-separated.
"""

from __future__ import annotations

import copy
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from overlay.core.errors import ConfigError

CONFIG_FILE = "config.toml"

#: A loaded configuration: section name → key → value (TOML types), see DEFAULTS.
Config = dict[str, dict[str, Any]]

DEFAULTS: Config = {
    "node": {"profile": "lan", "event_log": 1000, "max_known_peers": 256},
    "network": {
        # TCP and, beside it on the same port number, QUIC (UDP): the path a hole
        # punch takes where a NAT treats UDP more kindly than TCP (docs/edge-nat.md).
        "listen": ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"],
        "bootstrap": [],
        "mdns": False,  # deprecated: read as [discovery] mdns (old config files)
        "max_frame_bytes": 4 * 1024 * 1024,
        # Network stack under the transport: "native" (overlay/p2p) or "py-libp2p".
        "stack": "native",
        # Bytes/s we send to any one peer (token bucket); 0 = unlimited.
        "max_send_rate": 0,
        # Noise cipher between colony peers: "auto" (AES-GCM where the CPU has AES
        # instructions), "aesgcm" or "chacha"; other libp2p peers always get /noise.
        "noise_cipher": "auto",
    },
    # QUIC path MTU discovery (overlay/p2p/quic_pmtud.py, docs/transport.md): datagrams
    # start at 1200 bytes and grow to what the path carries, up to max_datagram_bytes
    # (1200..65527; the route's MTU bounds it: 1472 on Ethernet, 65508 on loopback).
    "quic": {"pmtud": True, "max_datagram_bytes": 65527},
    "discovery": {"mdns": False},
    "api": {"listen": "127.0.0.1:5101"},
    "store": {"cid_version": 1, "initial_map_size_mib": 256},
    "dht": {"protocol": "/colony/kad/1.0.0", "k": 20, "alpha": 3, "mode": "auto"},
    "gossip": {"profile": "lan"},
    "log": {"level": "info", "format": "auto"},
    "capsule": {"slots": 4, "executors": [], "labels": [], "location": ""},
    "trust": {"serve_public": True},
    # Event handler scripts, serf-style (overlay/runtime/services/handlers.py).
    "handlers": {"scripts": [], "timeout_s": 60, "queue": 256},
    # Tier-2 topics (services/topics.py, docs/gossip.md): roles needed in colony mode;
    # `roles` entries "NAME=PUBLISH/SUBSCRIBE" (NAME may end with *) override per topic.
    "topics": {"publish_role": "submit", "subscribe_role": "member", "roles": []},
    # Colony-wide totals by push-sum (services/aggregate.py): epoch and round length.
    "aggregate": {"epoch_s": 30.0, "round_s": 1.0},
    # Grants between colonies (docs/federation.md): how often a node looks up the
    # revocation lists of the colonies it has open sessions with; whether other
    # colonies' executors (grants giving `execute`) may run this colony's capsules.
    "federation": {"recheck_s": 10.0, "guest_executors": False},
    # Tier-1 cells (gossip/cells.py, services/cells.py, docs/gossip.md "Cells in the
    # daemon"): SWIM pools split by key prefix above `cap` live members.
    "cell": {"cap": 5000, "site": "", "hold_s": 60.0, "check_interval_s": 10.0,
             "merge_below": 0.5, "digest_interval_s": 30.0},
    # Trustless HTTP gateway (overlay/runtime/gateway, docs/gateway.md); "" = off.
    "gateway": {"listen": "", "fetch": False, "fetch_timeout_s": 30, "max_connections": 64},
    # NAT traversal (overlay/runtime/edge/dialer.py, docs/edge-nat.md).
    "edge": {
        "webrtc": True,
        "stun": [],
        "turn": [],
        "turn_username": "",
        "turn_password": "",
        "dial_order": ["direct", "holepunch", "webrtc", "relay"],
        "relays": [],
        "keep_reservations": 0,
        "holepunch": True,
        "holepunch_grace_s": 5.0,
        "holepunch_transports": ["tcp", "quic"],
        "holepunch_retry_s": 40.0,
    },
    # Relaying for others (overlay/runtime/edge/relay.py): off unless this node agrees.
    "relay": {
        "enabled": False,
        "max_reservations": 64,
        "max_circuits": 16,
        "max_circuits_per_peer": 4,
        "max_bytes": 256 * 1024 * 1024,
        "max_duration_s": 600,
        "max_rate": 4 * 1024 * 1024,
        "reservation_ttl_s": 300,
        # Circuit relay v2 (/libp2p/circuit/relay/0.2.0/hop) for any libp2p peer, not
        # only members (overlay/runtime/edge/relay_v2.py); within the same limits.
        "serve_non_members": False,
    },
}

#: `[node] profile` presets: defaults for other keys; config.toml and the environment
#: still override each key. `edge` is for Raspberry-Pi-class devices (docs/edge.md):
#: slower gossip (gossip's edge profile), fewer parallel DHT queries, a smaller first
#: LMDB map, and shorter in-memory event log and peer memory.
NODE_PROFILES: dict[str, Config] = {
    "lan": {},
    "wan": {"gossip": {"profile": "wan"}},
    "edge": {
        "gossip": {"profile": "edge"},
        "dht": {"alpha": 2},
        "store": {"initial_map_size_mib": 64},
        "node": {"event_log": 200, "max_known_peers": 64},
    },
}

TEMPLATE = """\
# Colony node configuration. Every key is optional; the values shown are the defaults.
# Environment variables override this file: COLONY_<SECTION>_<KEY>, e.g.
#   COLONY_API_LISTEN=127.0.0.1:5200   COLONY_NETWORK_BOOTSTRAP=/ip4/…/p2p/12D3…,/ip4/…
# Command-line flags override both.

[node]
# Preset for the keys below: "lan", "wan" or "edge" (small devices, slow or NAT'd
# links: slower gossip, fewer parallel DHT queries, smaller caches; docs/edge.md).
# Keys the preset sets are left commented out below ("preset: lan … / edge …"):
# uncomment one to override the preset.
profile = "lan"
# Node events kept in memory for `colony events watch` clients that fall behind.
# event_log = 1000                   # preset: lan/wan 1000, edge 200
# Peers remembered in peers.json for the next start.
# max_known_peers = 256              # preset: lan/wan 256, edge 64

[network]
# Multiaddrs to listen on: libp2p over TCP (Noise and Yamux are always on) and over
# QUIC v1 on UDP (TLS 1.3; hole punching uses both).
listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
# Peers to contact at start-up, as full multiaddrs ending in /p2p/<peer id>.
bootstrap = []
# Largest frame a peer may send us on a Colony protocol (bytes).
max_frame_bytes = 4194304
# libp2p wire implementation: "native" (Colony's own multistream-select, Noise XX
# and Yamux; fast, small) or "py-libp2p" (the py-libp2p 0.8.1 host). Peers of any
# libp2p implementation interoperate with either.
stack = "native"
# Send-rate limit per peer in bytes/s (a token bucket, as a WAN uplink); 0 = none.
max_send_rate = 0
# Noise cipher offered to colony peers: "auto" offers AES-256-GCM first when this
# CPU has AES instructions (x86 AES-NI, ARMv8 crypto extensions: ~3x faster there)
# and ChaCha20-Poly1305 otherwise (faster on ARM boards without them); "aesgcm"
# always offers it, "chacha" never. js/go/rust libp2p peers always get "/noise".
noise_cipher = "auto"

[quic]
# Path MTU discovery: datagrams start at 1200 bytes (safe on any path) and grow to
# what the path carries (probes; 1472 on Ethernet, the maximum on loopback).
pmtud = true
# Its ceiling, 1200..65527 (the route's MTU bounds the search below it).
max_datagram_bytes = 65527

[discovery]
# Find peers on the local network by multicast DNS (the libp2p mDNS spec, so
# js-libp2p and kubo nodes on the LAN see us and we see them). Off by default:
# it announces this node's addresses to everyone on the link.
mdns = false

[api]
# Control API used by the `colony` CLI (token in <home>/api.token).
listen = "127.0.0.1:5101"

[store]
# CID version for `colony add` (0 = what `ipfs add` gives by default).
cid_version = 1
# LMDB map size to start with; it grows automatically when full.
# initial_map_size_mib = 256         # preset: lan/wan 256, edge 64

[dht]
# libp2p Kademlia protocol id; "/ipfs/kad/1.0.0" joins the IPFS public DHT's wire.
protocol = "/colony/kad/1.0.0"
k = 20
# Parallel queries per lookup.
# alpha = 3                          # preset: lan/wan 3, edge 2
# "server" answers lookups and stores records for others; "client" only looks up
# and provides (kad-dht client mode: for nodes others cannot reach, e.g. behind NAT);
# "auto" serves until the reachability check (dial-back) finds the node behind a NAT,
# and serves again once it is public (kubo's default).
# mode = "auto"

[gossip]
# Timing profile: "lan", "wan" or "edge".
# profile = "lan"                    # preset: [node] profile's name

[trust]
# Colony mode only (see `colony colony create` / `colony join`): serve blocks over
# Bitswap to peers that are not members of the colony (published, public datasets).
# false: only members get blocks.
serve_public = true

[gateway]
# Read-only trustless HTTP gateway: GET /ipfs/CID[/path] as raw blocks, CAR streams,
# files and directory listings (docs/gateway.md). Off while empty; e.g. "127.0.0.1:8080".
# Serves only what this node serves to peers outside the colony (never private DAGs).
listen = ""
# Fetch a DAG whose root is not stored here before answering (else 404), waiting at
# most fetch_timeout_s seconds (then 504).
fetch = false
fetch_timeout_s = 30
# Connections served at once (one more is answered 503 with Retry-After).
max_connections = 64

[topics]
# `colony topic sub|pub` (docs/gossip.md "Topics in the daemon"). Colony mode only:
# the certificate role a node needs to publish to / subscribe to a topic; `roles`
# entries "NAME=PUBLISH/SUBSCRIBE" override them per topic (NAME may end with *).
publish_role = "submit"
subscribe_role = "member"
roles = []

[aggregate]
# Colony-wide totals for `colony stats` (members, CPUs, GPUs, memory, disk) by push-sum
# gossip: restarted every epoch_s seconds of wall clock, one exchange per round_s.
epoch_s = 30.0
round_s = 1.0

[federation]
# Grants between colonies (docs/federation.md). Every recheck_s seconds this node
# looks up the revocation list of each colony whose members hold a session here and
# ends the sessions of members that colony revoked (bound: recheck_s + one DHT lookup).
recheck_s = 10.0
# Let other colonies' nodes that hold a grant of this colony giving `execute` run this
# colony's capsules (they then see the capsules' inputs): placement offers them leases
# like members' executors. Off: the grants' `execute` is not used here.
guest_executors = false

[cell]
# Gossip membership is full inside a *cell* (SWIM); a cell whose live members stayed
# above `cap` for hold_s seconds splits in two by the members' key prefix, and two
# sibling cells that together fell below merge_below × cap merge back (docs/gossip.md
# "Cells in the daemon"). A colony under the cap is one cell: nothing changes.
cap = 5000
# Cells are split within a site: nodes with different site labels never share a cell
# and publish their digests under their own rendezvous key. "" = the one default site.
site = ""
hold_s = 60.0
# How often each node compares its cell's live count with the cap.
check_interval_s = 10.0
merge_below = 0.5
# How often this node publishes its cell's digest (when it is one of the cell's
# publishers) and reads the other cells' digests through the DHT.
digest_interval_s = 30.0

[capsule]
# Capsules this node runs at once (0 = never execute; it still keeps custody).
slots = 4
# Executor kinds to offer; [] = every kind that works here (subprocess, function,
# and slurm when sbatch reaches a controller). Kinds that do not work are never offered.
executors = []
# Labels capsules can require (conditions.labels), as "key=value" strings.
labels = []
# Free-form location capsules can require (conditions.location).
location = ""

[handlers]
# Local commands run on node events, as serf's event handlers: "FILTER=COMMAND",
# FILTER one or more of member-join, member-leave, member-failed, member-update,
# member-reap, user, user:NAME, * (comma-separated). The command runs by /bin/sh in
# the node's home with the event in COLONY_* (and SERF_*) variables and on stdin
# (docs/daemon.md "Event handlers"). Set this list here, not in the environment.
scripts = []
# Seconds a command may run before it is killed (SIGTERM, SIGKILL 2 s later).
timeout_s = 60
# Events waiting per handler; beyond it events are dropped and counted.
queue = 256

[edge]
# Reaching peers behind NATs (docs/edge-nat.md). Try in this order: "direct" (TCP),
# "holepunch" (a relay circuit the peer upgrades to direct TCP with DCUtR),
# "webrtc" (a data channel; offer/answer forwarded by a member both reach),
# "relay" (a circuit through a member with [relay] enabled; end-to-end encrypted).
dial_order = ["direct", "holepunch", "webrtc", "relay"]
# Accept and make WebRTC connections (aiortc; a thread with its own asyncio loop).
webrtc = true
# ICE servers: STUN urls ("stun:host:3478") add server-reflexive candidates (the
# [network] stun_servers are used too); TURN urls ("turn:host:3478?transport=udp")
# add relayed candidates, with these credentials.
stun = []
turn = []
turn_username = ""
turn_password = ""
# Relay reservations to keep (a NAT'd node: 2), and peer ids to reserve at first.
keep_reservations = 0
relays = []
# DCUtR (/libp2p/dcutr) on relayed connections: punch a direct TCP path (native
# stack), then close the circuit this many seconds later.
holepunch = true
holepunch_grace_s = 5.0
# Punch over these at once; the first direct connection wins. QUIC needs a
# "/ip4/…/udp/…/quic-v1" address in [network] listen (the punch leaves from it).
holepunch_transports = ["tcp", "quic"]
# A failed punch is tried once more this many seconds later (0: never).
holepunch_retry_s = 40.0

[relay]
# Relay circuits for other members (this node must be reachable). Each circuit is
# limited in bytes (both ways), duration and rate (bytes/s; 0 = unlimited).
enabled = false
max_reservations = 64
max_circuits = 16
max_circuits_per_peer = 4
max_bytes = 268435456
max_duration_s = 600
max_rate = 4194304
reservation_ttl_s = 300
# Also relay for libp2p peers that are not members (standard circuit relay v2:
# js-libp2p, kubo, rust-libp2p nodes), within the same limits.
serve_non_members = false

[log]
# debug, info, warning, error
level = "info"
# "auto" (console on a tty, JSON lines otherwise), "console" or "json"
format = "auto"
"""


def template_for(profile: str) -> str:
    """TEMPLATE with the profile's preset values written in (what `init --profile` saves)."""
    if profile not in NODE_PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(NODE_PROFILES)}")
    preset = {**NODE_PROFILES[profile], "node": {
        **NODE_PROFILES[profile].get("node", {}), "profile": profile}}
    out, section = [], ""
    for line in TEMPLATE.splitlines(keepends=True):
        if line.startswith("["):
            section = line.strip().strip("[]")
        key = line.split("=", 1)[0].strip() if "=" in line and line[0].isalpha() else ""
        if key and key in preset.get(section, {}):
            value = preset[section][key]
            line = f"{key} = {json.dumps(value)}\n"  # TOML and JSON agree on str/int/bool
        out.append(line)
    return "".join(out)


def default_home() -> Path:
    env = os.environ.get("COLONY_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "colony"


def _check_type(section: str, key: str, value: object, default: object) -> object:
    where = f"[{section}] {key}"
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        return float(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, not {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")
    elif isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, not {value!r}")
    return value


def _from_env(raw: str, default: object) -> object:
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            return raw  # reported by _check_type with the key's name
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            return raw  # reported by _check_type with the key's name
    if isinstance(default, list):
        return [p.strip() for p in raw.split(",") if p.strip()]
    return raw


def merge(base: Config, overlay: Mapping[str, Any], origin: str) -> None:
    for section, values in overlay.items():
        if section not in DEFAULTS:
            raise ConfigError(
                f"{origin}: unknown section [{section}]; known: {', '.join(DEFAULTS)}"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                raise ConfigError(
                    f"{origin}: unknown key {key!r} in [{section}]; "
                    f"known: {', '.join(DEFAULTS[section])}"
                )
            try:
                base[section][key] = _check_type(section, key, value, DEFAULTS[section][key])
            except ConfigError as e:
                raise ConfigError(f"{origin}: {e}") from None


def load(home: Path, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, the `[node] profile` preset, `<home>/config.toml`, the environment."""
    cfg = copy.deepcopy(DEFAULTS)
    path = home / CONFIG_FILE
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None
    env = os.environ if env is None else env
    node = data.get("node")
    name = env.get("COLONY_NODE_PROFILE") or (
        node.get("profile", "lan") if isinstance(node, dict) else "lan")
    if name not in NODE_PROFILES:
        raise ConfigError(f"[node] profile must be one of {', '.join(NODE_PROFILES)}, "
                          f"not {name!r}")
    merge(cfg, NODE_PROFILES[name], f"profile {name}")
    if data:
        merge(cfg, data, str(path))
    for section, keys in DEFAULTS.items():
        for key, default in keys.items():
            name = f"COLONY_{section.upper()}_{key.upper()}"
            if name in env:
                merge(cfg, {section: {key: _from_env(env[name], default)}}, name)
    if cfg["dht"]["mode"] not in ("server", "client", "auto"):
        raise ConfigError('[dht] mode must be "server", "client" or "auto", '
                          f'not {cfg["dht"]["mode"]!r}')
    return cfg


def mdns_enabled(conf: Mapping[str, Mapping[str, Any]]) -> bool:
    """`[discovery] mdns`, or the older `[network] mdns` key of existing config files."""
    return bool(conf["discovery"]["mdns"] or conf["network"]["mdns"])
