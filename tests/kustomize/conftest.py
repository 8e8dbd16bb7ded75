"""Fixtures for the Kustomize tests (helpers live in kustomize_testlib.py beside this file)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kustomize_testlib import (
    CRD_DIR,
    OVERLAYS,
    CrdSchemas,
    Renders,
    kustomization_roots,
    root_id,
)
from promdata import Prom, loaded_prometheus


@pytest.fixture(scope="session")
def renders() -> Renders:
    """`renders(path)`: the objects `kubectl kustomize path` renders (each path rendered once)."""
    return Renders()


@pytest.fixture(scope="session")
def prometheus() -> Iterator[Prom]:
    """Debian's Prometheus with six hours of GPU fleet and mlguard series (promdata.py)."""
    with loaded_prometheus() as prom:
        yield prom


@pytest.fixture(scope="session")
def crd_schemas() -> CrdSchemas:
    if not CRD_DIR.is_dir():
        pytest.skip(f"{CRD_DIR} is absent (../shared beside the repository): custom resources "
                    "cannot be validated against their CRDs here")
    return CrdSchemas(CRD_DIR)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kustomization_root" in metafunc.fixturenames:
        roots = kustomization_roots()
        metafunc.parametrize("kustomization_root", roots, ids=[root_id(r) for r in roots])
    if "overlay" in metafunc.fixturenames:
        metafunc.parametrize("overlay", OVERLAYS)
