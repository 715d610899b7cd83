from __future__ import annotations

import pytest

from voicecalls.fields import json_depth


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ({}, 1), ([], 1), ({"a": 1}, 1), ({"a": {"b": [1]}}, 3), ([[[[]]]], 4)],
)
def test_json_depth_counts_nesting(value: object, depth: int) -> None:
    assert json_depth(value) == depth


def test_json_depth_survives_very_deep_values() -> None:
    deep: list = []
    for _ in range(100_000):
        deep = [deep]

    assert json_depth(deep) == 100_001
