"""Unit tests for the pure helpers of fabfile.facts."""

from __future__ import annotations

import pytest

from fabfile.render.parse import upstream


@pytest.mark.parametrize(
    "version, expected",
    [
        ("2.2.11-6", "2.2.11"),
        ("1:2.2.11-1", "2.2.11"),
        ("2.2.11", "2.2.11"),
        ("2.2.11-6.pgdg120+1", "2.2.11"),
        ("12:2.2.10-1+b1", "2.2.10"),
    ],
)
def test_upstream(version, expected):
    assert upstream(version) == expected
