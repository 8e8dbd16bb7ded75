"""A corpus of realistic GPU manifests across every kind mlguard knows (vLLM, SGLang, TGI and ROCm servers,
KServe InferenceService/LLMInferenceService/ServingRuntime, LeaderWorkerSet, RayCluster/RayService/RayJob,
PyTorch DDP and the other Kubeflow jobs, Trainer TrainJob and runtimes, JobSet, Knative, Volcano, Argo
Workflows, DRA claims, CDI annotations, and two kinds found by the generic search), judged with exact verdicts.

The expected GPU counts follow each project's semantics, e.g.: a Deployment of 2 replicas with the default
25% surge holds 3 pods during a rollout; a RayService's NewCluster upgrade runs a second cluster ((1 + 1) x 4);
an LLMInferenceService with parallelism data 16 / dataLocal 8 is an LWS of groups of 2 (leader + worker, 8 GPUs
each); a TrainJob takes numNodes x resourcesPerNode (4 x 8), or its runtime's container when it sets none; an
elastic PyTorchJob counts its maxReplicas; runtimes and WorkflowTemplates run no pods of their own (0).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.context import ManifestFacts
from policies.engine import evaluate
from policies.model import Report
from policies.policyset import parse_policyset
from policies.workload import Workload, extract

CORPUS = Path(__file__).parent / "data" / "kinds"
NOT_WORKLOADS = {"Namespace", "ResourceQuota", "ResourceClaimTemplate"}


def _objects() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted((CORPUS / "manifests").glob("*.yaml")):
        out.extend(d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict))
    return out


OBJECTS = _objects()
POLICYSET = parse_policyset((CORPUS / "policyset.yaml").read_text(), source="policyset.yaml")
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "expected.yaml").read_text())
FACTS = ManifestFacts(OBJECTS, workloads=POLICYSET.workloads)
REPORT: Report = evaluate(OBJECTS, POLICYSET, point="ci", facts=FACTS)
WORKLOADS = {f"{o['kind']}/{o['metadata'].get('namespace', 'default')}/{o['metadata']['name']}":
             extract(o, gpu=POLICYSET.gpu, resolve_claim=FACTS.resolve_claim, resolve_object=FACTS.resolve_object,
                     config=POLICYSET.workloads)
             for o in OBJECTS if o["kind"] not in NOT_WORKLOADS}


def _gpu_holder(w: Workload) -> bool:
    return any(w.uses_gpu(i, POLICYSET.gpu) or w.gpu_unknown(i, POLICYSET.gpu) for i in range(len(w.templates)))


def test_the_corpus_has_at_least_40_gpu_objects_across_the_kinds() -> None:
    gpu = [k for k, w in WORKLOADS.items() if w.full_size_gpus(POLICYSET.gpu)]
    assert len(gpu) >= 40
    kinds = {k.split("/")[0] for k in WORKLOADS}
    assert {"Deployment", "StatefulSet", "Pod", "InferenceService", "LLMInferenceService", "ServingRuntime",
            "LeaderWorkerSet", "RayCluster", "RayService", "RayJob", "PyTorchJob", "TFJob", "MPIJob", "PaddleJob",
            "XGBoostJob", "JAXJob", "TrainJob", "TrainingRuntime", "ClusterTrainingRuntime", "JobSet", "Service",
            "Job", "Workflow", "WorkflowTemplate", "CronWorkflow", "Notebook", "ScaledJob"} <= kinds


def test_every_object_is_expected_and_every_expectation_is_an_object() -> None:
    assert set(EXPECTED) == set(WORKLOADS)


def test_no_gpu_object_passes_silently() -> None:
    """Every object holds GPUs the extractor sees, or says why it cannot tell (an unresolved claim), or is a
    template whose GPUs are counted where it runs; and one that the look-ahead cannot count (GPUs injected by
    annotation, an unresolved claim) is reported."""
    for key, w in WORKLOADS.items():
        assert _gpu_holder(w), f"{key}: no GPU seen"
        said = [v for v in REPORT.violations if str(v.resource) == key] + \
            [n for n in REPORT.notes if str(n.resource) == key]
        runs_no_pods = all(t.pods == 0 for t in w.templates)  # a runtime or WorkflowTemplate: counted where it runs
        assert w.full_size_gpus(POLICYSET.gpu) or runs_no_pods or said, f"{key} passes silently"


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_exact_verdict(key: str) -> None:
    want = EXPECTED[key]
    w = WORKLOADS[key]
    assert {k: int(v) for k, v in w.full_size_gpus(POLICYSET.gpu).items()} == want["gpus"]
    serving = (w.serving.model or "(unnamed)") if w.serving is not None else None
    assert serving == want.get("serving")
    got = sorted(f"{v.action} {v.policy} {v.path}" for v in REPORT.violations if str(v.resource) == key)
    assert got == want["violations"]
    assert [n.path for n in REPORT.notes if str(n.resource) == key] == want.get("notes", [])


def test_every_violation_names_its_runbook() -> None:
    assert REPORT.violations and all(re.search(r"runbooks/[a-z-]+\.md#?", v.runbook) for v in REPORT.violations)
    assert not REPORT.policy_errors
