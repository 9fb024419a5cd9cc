"""The DHT core's counters: one field per thing it dropped, refused or did.

Every untrusted input the core cuts, drops or refuses is counted here (docs/dht.md),
so a misbehaving peer shows up in `/metrics` rather than in an exception. Plain
counters, only ever incremented; `as_dict` keeps field order (metrics and sim output
read it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class DhtStats:
    rpcs_sent: int = 0
    rpc_timeouts: int = 0
    rpcs_refused_pending_limit: int = 0
    late_or_duplicate_responses: int = 0
    unsolicited_responses: int = 0
    mismatched_responses: int = 0
    peer_lists_truncated: int = 0
    self_referrals: int = 0
    records_rejected: int = 0
    records_stored: int = 0
    record_store_refusals: int = 0
    providers_stored: int = 0
    provider_refusals: int = 0
    #: Provider records dropped to make room for a new provider of a full key (its stalest).
    provider_evictions: int = 0
    provider_sender_mismatch: int = 0
    bad_keys: int = 0
    lookups_refused_busy: int = 0
    provided_keys_refused: int = 0
    requests_served: int = 0
    #: Requests a client-mode core received (it answers none).
    requests_refused_client: int = 0
    #: Server ↔ client switches in mode "auto".
    mode_changes: int = 0
    #: PINGs sent to requesters not in the table, and how many went unanswered (a
    #: client, or a peer gone since): those requesters stay out of the table.
    role_checks_sent: int = 0
    role_checks_failed: int = 0
    #: Unknown requesters not verified because their bucket is full (they could only
    #: have waited in the replacement cache).
    role_checks_skipped_full: int = 0
    #: Lookup queries past their soft (RTT-based) timeout, and answers that came later.
    rpc_stalls: int = 0
    late_answers_after_stall: int = 0
    #: Inbound requests dropped by the per-peer rate limit (dht/rate_limit.py), and
    #: limiter buckets dropped to keep its table bounded.
    requests_rate_limited: int = 0
    rate_limit_buckets_dropped: int = 0
    #: Providers learned from answers that came after their lookup's walk had ended
    #: (queries past their soft timeout: `ProvidersFound` after `LookupDone`), and
    #: provider lookups that could not wait for such answers (`max_lookups` lookups
    #: were waiting already).
    late_providers: int = 0
    provider_waits_refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
