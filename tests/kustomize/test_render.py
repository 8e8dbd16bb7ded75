"""Every kustomization renders, and every rendered object is valid for its schema."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from kustomize_testlib import (
    CrdSchemas,
    Renders,
    is_custom,
    kustomization_roots,
    root_id,
    validate_builtin,
    validate_custom,
)


def test_every_expected_kustomization_is_discovered() -> None:
    found = {root_id(p) for p in kustomization_roots()}
    expected = {"kustomize/base", "kustomize/overlays/dev", "kustomize/overlays/staging",
                "kustomize/overlays/prod", "kustomize/examples/argocd", "kustomize/examples/argocd/bootstrap",
                "kustomize/examples/gpu-platform", "policies/catalog"}
    assert expected <= found, f"missing: {sorted(expected - found)}"
    # Components are applied through overlays, never built alone.
    assert not any(r.startswith("kustomize/components/") for r in found)


def test_renders_and_is_not_empty(renders: Renders, kustomization_root: Path) -> None:
    objs = renders(kustomization_root)
    assert objs, f"{kustomization_root} renders no objects"
    for obj in objs:
        assert {"apiVersion", "kind", "metadata"} <= set(obj), obj
        assert obj["metadata"].get("name"), obj


def test_no_duplicate_objects(renders: Renders, kustomization_root: Path) -> None:
    keys = Counter(
        (o["apiVersion"].rpartition("/")[0], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        for o in renders(kustomization_root)
    )
    assert [k for k, n in keys.items() if n > 1] == []


def test_builtin_kinds_are_valid(renders: Renders, kustomization_root: Path) -> None:
    builtins = [o for o in renders(kustomization_root) if not is_custom(o)]
    for obj in builtins:
        validate_builtin(obj)


def test_custom_resources_are_valid(
    renders: Renders, kustomization_root: Path, crd_schemas: CrdSchemas,
) -> None:
    for obj in renders(kustomization_root):
        if is_custom(obj):
            validate_custom(obj, crd_schemas)
