"""Fixtures for the pure statistics: seeded generators only (no servers, no I/O)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261123)
