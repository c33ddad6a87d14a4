"""Queue IDs: unique per process, and never shared between the processes of one server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backupmx.queue import ids


@pytest.fixture(autouse=True)
def single_process() -> Iterator[None]:
    yield
    ids.configure(0, 1)


def test_ids_of_one_process_are_unique_and_ten_hex_digits():
    made = [ids.new_id() for _ in range(5000)]
    assert len(set(made)) == 5000
    assert all(len(i) == 10 and int(i, 16) >= 0 and i == i.upper() for i in made)


def test_each_slot_makes_only_its_own_ids():
    by_slot = {}
    for slot in range(3):
        ids.configure(slot, 3)
        by_slot[slot] = [ids.new_id() for _ in range(2000)]
    for slot, made in by_slot.items():
        assert {ids.slot_of(i, 3) for i in made} == {slot}
    assert len(set().union(*by_slot.values())) == 6000


def test_a_slot_outside_the_range_is_refused():
    with pytest.raises(ValueError, match="slot 3 outside 0..2"):
        ids.configure(3, 3)
