"""The pure parts of the region topology (tests/fault/regions.py) and of worker placement
(tests/fault/placement.py): who is in which region, the one-way delays, each namespace's delay rules,
each worker's server order; and the scenario table's region entries. The runs themselves are
`python -m tests.fault.run --scenario S17` and on (root, network namespaces)."""

from __future__ import annotations

from tests.fault import regions
from tests.fault.placement import reorder_servers
from tests.fault.regions import HOME, delay_plan, one_way_ms, region_of, server_order
from tests.fault.scenarios import SCENARIOS


def test_regions_hold_five_nodes_two_two_one_and_a_worker_near_each_of_four() -> None:
    assert {r: len(ns) for r, ns in regions.REGIONS.items()} == {"A": 2, "B": 2, "C": 1}
    assert [region_of(n) for n in ("n1", "n2", "n3", "n4", "n5")] == ["A", "A", "B", "B", "C"]
    assert [region_of(w) for w in ("w1", "w2", "w3", "w4")] == ["A", "A", "B", "C"]
    assert regions.PREFERRED == ("n1", "n2")


def test_one_way_delays_are_per_pair_of_regions_and_none_inside_one() -> None:
    assert one_way_ms("n1", "n2") == 0
    assert one_way_ms("n1", "n3") == one_way_ms("n4", "w1") == 30
    assert one_way_ms("n1", "n5") == one_way_ms("n3", "n5") == one_way_ms("w4", "n2") == 80


def test_each_namespace_delays_only_what_leaves_its_region_by_that_regions_delay() -> None:
    names = ["n1", "n2", "n3", "n4", "n5", "w1", "w4"]
    ips = {n: f"10.0.0.{i}" for i, n in enumerate(names, 1)}
    plan = delay_plan(names, ips)
    assert plan["n1"] == {30: [ips["n3"], ips["n4"]], 80: [ips["n5"], ips["w4"]]}
    assert plan["n5"] == {80: sorted(ips[n] for n in ("n1", "n2", "n3", "n4", "w1"))}
    assert ips["n2"] not in [a for per in plan["n1"].values() for a in per]  # same region: no delay


def test_a_worker_tries_its_home_then_its_region_then_the_nearest_regions() -> None:
    assert server_order("w1") == ["n1", "n2", "n3", "n4", "n5"]
    assert server_order("w2") == ["n2", "n1", "n3", "n4", "n5"]
    assert server_order("w3") == ["n3", "n4", "n1", "n2", "n5"]
    assert server_order("w4") == ["n5", "n1", "n2", "n3", "n4"]
    assert set(HOME) == {"w1", "w2", "w3", "w4"}


def test_leader_first_moves_one_server_to_the_front_and_keeps_the_rest_in_order() -> None:
    argv = ["python", "-m", "w", "--server", "a:1,b:1,c:1", "--id", "w1"]
    assert reorder_servers(argv, ["a:1", "b:1", "c:1"], ["c:1"])[4] == "c:1,a:1,b:1"
    assert reorder_servers(argv, ["a:1", "b:1", "c:1"], ["a:1"])[4] == "a:1,b:1,c:1"


def test_the_scenario_table_knows_the_region_scenarios() -> None:
    for key in ("S17", "S18", "S19", "S20"):
        s = SCENARIOS[key]
        assert s.cluster is regions.RegionCluster and s.nodes == 5, key
    assert SCENARIOS["S6"].cluster.__name__ == "LeaderFirstCluster"
    assert SCENARIOS["S1"].nodes == 3
