"""Every policy sample and corpus manifest of a kind whose CRD is in ../shared/schemas/crds (KServe, KubeRay,
Kubeflow Trainer, JobSet, LeaderWorkerSet, KEDA's ScaledObject) is a valid object of that CRD version: mlguard is
judged on manifests the API server would accept, not on shapes of its own making."""

from __future__ import annotations

import pytest
import yaml
from kustomize_testlib import REPO, CrdSchemas, validate_custom

SAMPLE_DIRS = [REPO / "policies" / "library", REPO / "tests" / "policies" / "data" / "kinds"]
GROUPS = {"serving.kserve.io", "ray.io", "trainer.kubeflow.org", "jobset.x-k8s.io", "leaderworkerset.x-k8s.io",
          "keda.sh"}
# the kinds of those groups with a CRD in ../shared (KServe's LLMInferenceServiceConfig has none there)
WITH_CRD = {"InferenceService", "LLMInferenceService", "ServingRuntime", "ClusterServingRuntime", "RayCluster",
            "RayService", "RayJob", "TrainJob", "TrainingRuntime", "ClusterTrainingRuntime", "JobSet",
            "LeaderWorkerSet", "ScaledObject"}


def _samples() -> list[tuple[str, dict]]:
    out = []
    for root in SAMPLE_DIRS:
        for path in sorted(root.rglob("*.yaml")):
            if path.name == "suite.yaml":
                continue
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and str(doc.get("apiVersion", "")).rpartition("/")[0] in GROUPS \
                        and doc.get("kind") in WITH_CRD:
                    out.append((f"{path.relative_to(REPO)}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


SAMPLES = _samples()


def test_every_kind_with_a_crd_has_samples() -> None:
    assert {doc["kind"] for _, doc in SAMPLES} == WITH_CRD


@pytest.mark.parametrize(("where", "doc"), SAMPLES, ids=[w for w, _ in SAMPLES])
def test_sample_is_valid_for_its_crd(where: str, doc: dict, crd_schemas: CrdSchemas) -> None:
    validate_custom(doc, crd_schemas)
