"""`mlguard check` on the shipped examples, as a platform team's CI would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "kustomize/examples"
EXAMPLE_KEY = EXAMPLES / "canary-rollout/eval/TEST-ONLY-example.public.pem"


def check(*args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "policies.cli", "check", "--format", "json", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def verdicts(report: dict) -> set[tuple[str, str, str]]:
    return {(v["action"], v["policy"], f"{v['resource']['kind']}/{v['resource']['name']}")
            for v in report["violations"]}


def strict_with_example_key(tmp_path: Path) -> Path:
    """The strict catalog as a CI job would configure it: the eval public key inline (in the cluster it
    comes from the mounted Secret). The key is the example's TEST-ONLY key."""
    from policies.attestation import key_id, load_public_keys

    doc = yaml.safe_load((ROOT / "policies/catalog/strict.yaml").read_text())
    pem = EXAMPLE_KEY.read_text()
    doc["spec"]["evalKeys"] = {"keys": [{"keyId": key_id(load_public_keys(pem)[0]), "publicKey": pem}]}
    # the example's attestation is valid for ten years so that it keeps working (eval/README.md); the default cap
    # is 90 days
    doc["spec"]["policies"]["eval-gate"].setdefault("params", {})["maxValidity"] = "3660d"
    path = tmp_path / "strict-ci.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_inference_stack_gets_the_expected_verdicts() -> None:
    code, report = check(str(EXAMPLES / "inference-stack"))
    assert code == 1
    assert verdicts(report) == {
        ("deny", "gpu-isolation", "Deployment/notebook"),
        ("deny", "gpu-quota", "Deployment/vllm-llama-70b"),
        ("deny", "gpu-tolerations", "Job/embeddings-backfill"),
        ("warn", "gpu-job-deadline", "CronJob/finetune-nightly"),
        ("warn", "eval-gate", "Deployment/vllm-llama-70b"),
        ("warn", "eval-gate", "Deployment/vllm-mistral-7b"),
    }
    quota = next(v for v in report["violations"] if v["policy"] == "gpu-quota")
    assert "needs 12 nvidia.com/gpu at full size" in quota["message"] and quota["path"] == "spec.replicas"
    assert report["summary"] == {"resources": 8, "deny": 3, "warn": 3, "audit": 0}


def test_canary_example_passes_strict_with_its_signed_attestation(tmp_path: Path) -> None:
    policyset = strict_with_example_key(tmp_path)
    # flagger/ is the Flagger variant of the same example (a Deployment, which strict's canary-required
    # refuses): a kustomization of its own, walked into unless excluded
    code, report = check("--policyset", str(policyset), str(EXAMPLES / "gpu-platform"),
                         str(EXAMPLES / "canary-rollout"), "--exclude", "flagger/")
    assert code == 0, report["violations"]
    assert report["violations"] == []


def test_canary_example_without_the_key_or_with_a_changed_version_is_denied(tmp_path: Path) -> None:
    code, report = check("--policyset", str(ROOT / "policies/catalog/strict.yaml"), str(EXAMPLES / "gpu-platform"),
                         str(EXAMPLES / "canary-rollout"), "--exclude", "flagger/")
    assert code == 1 and verdicts(report) == {("deny", "eval-gate", "Rollout/chat")}
    assert "step 2 (signature)" in report["violations"][0]["message"]
    # the same attestation on a different model version is not a pass
    rendered = subprocess.run(["kubectl", "kustomize", str(EXAMPLES / "canary-rollout")], capture_output=True,
                              text=True, check=True).stdout
    tampered = tmp_path / "tampered.yaml"
    tampered.write_text(rendered.replace('mlguard.io/model-version: "2026-11-20"',
                                         'mlguard.io/model-version: "2026-11-21"'))
    assert tampered.read_text() != rendered
    code, report = check("--policyset", str(strict_with_example_key(tmp_path)), str(EXAMPLES / "gpu-platform"),
                         str(tampered))
    assert code == 1 and verdicts(report) == {("deny", "eval-gate", "Rollout/chat")}
    assert "step 3" in report["violations"][0]["message"] and "2026-11-21" in report["violations"][0]["message"]


def test_the_canary_example_attestation_is_bound_to_its_namespace_and_capped(tmp_path: Path) -> None:
    """Issue 14: the same attestation in another namespace, or under the default 90-day maxValidity, is refused."""
    rendered = subprocess.run(["kubectl", "kustomize", str(EXAMPLES / "canary-rollout")], capture_output=True,
                              text=True, check=True).stdout
    moved = tmp_path / "moved.yaml"
    moved.write_text(rendered.replace("namespace: ml-serving", "namespace: ml-serving-copy"))
    code, report = check("--policyset", str(strict_with_example_key(tmp_path)), str(moved))
    gate = [v for v in report["violations"] if v["policy"] == "eval-gate"]
    assert code == 1 and gate and "not for namespace ml-serving-copy" in gate[0]["message"], gate
    doc = yaml.safe_load(strict_with_example_key(tmp_path).read_text())
    del doc["spec"]["policies"]["eval-gate"]["params"]["maxValidity"]
    capped = tmp_path / "capped.yaml"
    capped.write_text(yaml.safe_dump(doc))
    code, report = check("--policyset", str(capped), str(EXAMPLES / "gpu-platform"), str(EXAMPLES / "canary-rollout"),
                         "--exclude", "flagger/")
    assert code == 1 and "more than the 90 days the PolicySet allows" in report["violations"][0]["message"]
