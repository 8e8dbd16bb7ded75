"""Helpers for the Kustomize tests: render with `kubectl kustomize`, validate every object.

Built-in kinds are validated with kubernetes-validate against a pinned Kubernetes version; custom
resources with jsonschema (Draft 4) against the CRDs in ``../shared/schemas/crds`` (beside the
repository), Flagger's Canary included (``flagger/crd.yaml``, Flagger's published CRDs).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from policies.selectors import label_selector_matches

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE = REPO / "kustomize"
CATALOG = REPO / "policies" / "catalog"
SHARED = REPO.parent / "shared"
CRD_DIR = SHARED / "schemas" / "crds"
KUBERNETES_VERSION = "1.33"
OVERLAYS = ("dev", "staging", "prod")
NAMESPACE = "mlguard-system"
RENDER_TIMEOUT_S = 60

Obj = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Discovery and rendering


def kustomization_roots() -> list[Path]:
    """Every buildable kustomization (not Components) under kustomize/, plus the policy catalog."""
    roots = []
    for path in sorted(KUSTOMIZE.rglob("kustomization.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if doc.get("kind") == "Component":
            continue
        roots.append(path.parent)
    roots.append(CATALOG)
    return roots


def root_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def render(path: Path) -> list[Obj]:
    """`kubectl kustomize PATH` parsed into objects; a failure shows kustomize's own error."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise AssertionError("kubectl is required to render the overlays (apt-get install kubectl)")
    proc = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=RENDER_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc is not None]


class Renders:
    """Renders each kustomization root once per session."""

    def __init__(self) -> None:
        self._cache: dict[Path, list[Obj]] = {}

    def __call__(self, path: Path | str) -> list[Obj]:
        path = Path(path)
        if not path.is_absolute():
            path = REPO / path
        if path not in self._cache:
            self._cache[path] = render(path)
        return copy.deepcopy(self._cache[path])


# --------------------------------------------------------------------------------------------
# Finding objects


def find(objs: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objs if o.get("kind") == kind and (name is None or o["metadata"].get("name") == name)]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    hits = find(objs, kind, name)
    assert len(hits) == 1, f"expected exactly one {kind}/{name}, found {len(hits)}"
    return hits[0]


def labels_match(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (the policy library's own implementation); None selects nothing."""
    return selector is not None and label_selector_matches(selector, labels)


# --------------------------------------------------------------------------------------------
# Validation


def _strict_schema(node: Any) -> Any:
    """Make an openAPIV3Schema usable and strict under Draft 4.

    - ``nullable: true`` -> the type also admits null;
    - Go RE2 inline flags not at the start (``^(?i)...``) -> moved to the front for Python's re;
    - ``additionalProperties: false`` on every object with ``properties`` that does not preserve
      unknown fields (the API server would prune or reject unknown fields; jsonschema accepts them).
    """
    if isinstance(node, list):
        return [_strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions") and isinstance(value, dict):
            # a map of names to schemas, not a schema: a property may itself be named "properties"
            out[key] = {name: _strict_schema(sub) for name, sub in value.items()}
        else:
            out[key] = _strict_schema(value)
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    pattern = out.get("pattern")
    if isinstance(pattern, str):
        match = re.match(r"^\^\(\?([a-z]+)\)(.*)$", pattern)
        if match:
            out["pattern"] = f"(?{match.group(1)})^{match.group(2)}"
    if (
        "properties" in out
        and isinstance(out["properties"], dict)
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


_METADATA_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}


# The CRDs are 7.5 MB of YAML: use libyaml's parser where PyYAML was built with it.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class CrdKey:
    group: str
    version: str
    kind: str


class CrdSchemas:
    """The openAPIV3Schema of every CRD version in a directory, as Draft 4 validators."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._validators: dict[CrdKey, jsonschema.Draft4Validator] = {}
        self.groups: set[str] = set()
        for path in sorted(directory.rglob("*.yaml")):
            for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_LOADER):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                self.groups.add(spec["group"])
                for version in spec["versions"]:
                    schema = _strict_schema(version["schema"]["openAPIV3Schema"])
                    jsonschema.Draft4Validator.check_schema(schema)
                    key = CrdKey(spec["group"], version["name"], spec["names"]["kind"])
                    self._validators[key] = jsonschema.Draft4Validator(schema)

    def validator(self, obj: Mapping[str, Any]) -> jsonschema.Draft4Validator | None:
        group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
        return self._validators.get(CrdKey(group, version, str(obj.get("kind"))))

    def knows_group(self, obj: Mapping[str, Any]) -> bool:
        return str(obj.get("apiVersion", "")).rpartition("/")[0] in self.groups


def validate_builtin(obj: Mapping[str, Any]) -> None:
    """kubernetes-validate (strict: unknown fields are errors) at the pinned version."""
    try:
        kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise AssertionError(
            f"{obj.get('apiVersion')} {obj.get('kind')} is neither a Kubernetes {KUBERNETES_VERSION} "
            "kind nor a custom resource with a CRD in ../shared/schemas"
        ) from exc
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{obj.get('kind')}/{obj['metadata'].get('name')}: {exc.message}") from exc


def validate_custom(obj: Mapping[str, Any], schemas: CrdSchemas) -> None:
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    meta_errors = list(jsonschema.Draft4Validator(_METADATA_SCHEMA).iter_errors(obj.get("metadata")))
    assert not meta_errors, f"{name} metadata: {[e.message for e in meta_errors]}"
    validator = schemas.validator(obj)
    assert validator is not None, (
        f"{name}: no CRD version {obj.get('apiVersion')} in {schemas.directory} "
        "(wrong apiVersion for this kind?)"
    )
    errors = sorted(validator.iter_errors(dict(obj)), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name}: " + "; ".join(
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors[:10]
    )


# API groups of custom resources (no schema in kubernetes-validate): validated against their CRDs;
# everything else must be a built-in kind of the pinned version.
CUSTOM_GROUPS = frozenset({"argoproj.io", "cert-manager.io", "monitoring.coreos.com", "flagger.app",
                           "keda.sh", "serving.kserve.io", "leaderworkerset.x-k8s.io"})


def api_group(obj: Mapping[str, Any]) -> str:
    return str(obj.get("apiVersion", "")).rpartition("/")[0]


def is_custom(obj: Mapping[str, Any]) -> bool:
    return api_group(obj) in CUSTOM_GROUPS
