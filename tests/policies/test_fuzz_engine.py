"""Wrong-shaped objects never crash the evaluation path (a policy that raises fails closed instead)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.context import ManifestFacts
from policies.engine import evaluate
from policies.policyset import CATALOG, load_policyset

STRICT = load_policyset(CATALOG / "strict.yaml")
KINDS = ["Pod", "Deployment", "StatefulSet", "Job", "CronJob", "Rollout", "InferenceService", "LeaderWorkerSet",
         "DaemonSet", "ReplicaSet"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10), st.text(max_size=8),
                    st.sampled_from(["nvidia.com/gpu", "all", "1", "0.5", "Always", "/dev/nvidia0", "NoSchedule"]))
json_values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=3),
    st.dictionaries(st.sampled_from(["containers", "resources", "limits", "requests", "env", "name", "value",
                                     "template", "spec", "metadata", "labels", "tolerations", "image",
                                     "nvidia.com/gpu", "initContainers", "volumes", "hostPath", "path",
                                     "jobTemplate", "replicas", "strategy", "canary", "predictor", "model",
                                     "resourceClaims", "leaderWorkerTemplate", "workerTemplate", "annotations",
                                     "securityContext", "privileged", "nodeSelector", "affinity"]),
                    children, max_size=4)), max_leaves=25)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), spec=json_values, meta=json_values)
def test_any_shape_is_evaluated_without_escaping_exceptions(kind, spec, meta) -> None:
    obj = {"apiVersion": "v1", "kind": kind, "metadata": meta if isinstance(meta, dict) else {"name": "x"},
           "spec": spec}
    report = evaluate([obj], STRICT, point="admission", facts=ManifestFacts([obj]))
    for v in report.violations:  # whatever happened is explained, with a policy and an action
        assert v.policy and v.action in ("deny", "warn", "audit") and isinstance(v.message, str)
