"""Two colonies of real daemons on 127.0.0.1, different owners (docs/federation.md).

Colony A: a0 (founder) and a1 (member, submit, execute, no admit). Colony B: b0
(founder) and b1 (member only). B's daemons bootstrap into the same DHT through a0;
gossip stays per colony (a0 refuses b0's gossip). The world and the checks are
federation_helpers.py's, shared with test_federation_netns.py (three daemons a
colony, each in its own network namespace):

- b0 holds the grant (token): it reads the granted private DAG byte-identical and its
  copy becomes private in B; the other private DAG of A stays refused.
- b0 resolves a label of A under the grant's prefix (`shared-`) and reads its private
  DAG; a label outside the prefix is refused.
- b1 first holds only bad grants (one signed by a1, who lacks admit; one expired):
  A refuses both, naming why, and b1 reads nothing. With none held, A finds the grant
  in the DHT (/colony/grant/<A>/<B>) and b1 reads the DAG.
- b0 submits a capsule that runs in A, reads its receipt through A's nodes and its
  output (private in A) from the executor; the third capsule of the day is refused
  and the refusal names the quota and figures.
- `colony colony status` shows the grant given (with usage) on a0 and held on b0.
- a0 revokes the grant: every A node has the revocation within the stated bound
  (measured), and b1's next read of a granted DAG is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from colony_cluster import Cluster, wait_for
from federation_helpers import (
    FederationWorld,
    check_bad_grants_refused_then_the_dht_grant_works,
    check_capsule_runs_in_a_then_quota_refused,
    check_granted_dag_read_and_the_other_not,
    check_label_under_the_prefix_read,
    check_status_shows_grants_given_and_held,
    revoke_everywhere,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class World(FederationWorld):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ca = Cluster(root / "a", 2)
        self.cb = Cluster(root / "b", 2)

    def prepare(self) -> None:
        self.ca.prepare()
        self.cb.prepare()
        self.a, self.b = list(self.ca.nodes), list(self.cb.nodes)

    def launch(self) -> None:
        (a0, a1), (b0, b1) = self.ca.nodes, self.cb.nodes
        a0.start()
        wait_for(a0.up, 60, "a0's API")
        # B's founder enters the shared DHT through a0; b1 joins B through b0.
        a1.start([a0.addr])
        b0.start([a0.addr])
        wait_for(b0.up, 60, "b0's API")
        b1.start([b0.addr, a0.addr])
        for n in (a1, b1):
            wait_for(n.up, 60, f"{n.home.name}'s API")
        self.ca.wait_converged(30)
        self.cb.wait_converged(30)

    def close(self) -> None:
        self.ca.close()
        self.cb.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("federation"))
    try:
        w.start()
        yield w
    finally:
        w.close()


def test_granted_dag_is_read_and_the_other_is_not(world: World) -> None:
    check_granted_dag_read_and_the_other_not(world)


def test_a_label_under_the_grant_prefix_is_read(world: World) -> None:
    check_label_under_the_prefix_read(world)


def test_bad_grants_are_refused_with_reasons_then_the_dht_grant_works(world: World) -> None:
    check_bad_grants_refused_then_the_dht_grant_works(world)


def test_capsule_runs_in_a_receipt_readable_and_quota_refusal(world: World) -> None:
    check_capsule_runs_in_a_then_quota_refused(world)


def test_status_shows_grants_given_with_usage_and_held(world: World) -> None:
    check_status_shows_grants_given_and_held(world)


def test_revoked_grant_is_refused_everywhere_within_the_bound(world: World) -> None:
    revoke_everywhere(world)
