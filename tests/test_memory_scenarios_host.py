"""The driver-agnostic manager scenarios (tests/memory_scenarios.py) on the host driver."""

from __future__ import annotations

import pytest

from npu_platform.memory.drivers.host import HostDriver
from tests.memory_scenarios import SCENARIOS, Harness


class HostHarness(Harness):
    def __init__(self, granularity: int, populate: bool) -> None:
        self.granularity = granularity
        self.populate = populate
        self.name = f"host-{granularity // 1024}k-{'eager' if populate else 'lazy'}"

    def make_driver(self) -> HostDriver:
        return HostDriver(granularity=self.granularity, populate=self.populate)

    def limit_free(self, driver: HostDriver, free_bytes: int | None) -> None:
        driver.limit_bytes = None if free_bytes is None else driver.used_bytes + free_bytes

    def skip(self, reason: str) -> None:
        pytest.skip(reason)


HARNESSES = [HostHarness(2 << 20, True), HostHarness(64 << 10, False)]


@pytest.mark.parametrize("harness", HARNESSES, ids=[h.name for h in HARNESSES])
@pytest.mark.parametrize("scenario", list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_scenario(scenario, harness: HostHarness) -> None:
    scenario(harness)
