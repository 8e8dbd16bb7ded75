from decimal import Decimal

import pytest

from policies.quantity import QuantityError, format_quantity, is_whole, parse_quantity


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", Decimal(1)), (2, Decimal(2)), ("500m", Decimal("0.5")), ("16Gi", Decimal(16 * 2**30)),
    ("1.5", Decimal("1.5")), ("1e3", Decimal(1000)), ("2k", Decimal(2000)), (0.25, Decimal("0.25")),
])
def test_parses_exactly(raw, expected) -> None:
    assert parse_quantity(raw) == expected


@pytest.mark.parametrize("raw", ["two", "1Gb", "", "1.2.3", True, None, [1]])
def test_bad_quantities_say_so(raw) -> None:
    with pytest.raises(QuantityError, match="not a quantity"):
        parse_quantity(raw)


def test_whole_and_format() -> None:
    assert is_whole(parse_quantity("2000m")) and not is_whole(parse_quantity("1500m"))
    assert format_quantity(Decimal("2.000")) == "2" and format_quantity(Decimal("0.50")) == "0.5"


@pytest.mark.parametrize("raw", [" 1", "1 ", "\t2", "1\n", "\u0662", "\uff11", "1\u0660", "\u0967Gi", "1e\u0663"])
def test_only_what_the_api_server_parses(raw: str) -> None:
    """ASCII digits, no surrounding whitespace (k8s.io/apimachinery resource.ParseQuantity): a
    Unicode digit or padding read as a number here would be another value than the cluster's."""
    with pytest.raises(QuantityError, match="not a quantity"):
        parse_quantity(raw)


def test_mlguard_check_denies_a_unicode_digit_gpu_count(tmp_path) -> None:
    """From outside: ``nvidia.com/gpu: "\u0662"`` (Arabic-Indic two) was read as 2 GPUs."""
    import subprocess
    import sys

    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: q, namespace: team-a, labels: {team: a, cost-center: c}}\n"
        "spec:\n  containers:\n    - name: c\n      image: registry.example.com/app@sha256:" + "a" * 64 + "\n"
        '      resources: {limits: {nvidia.com/gpu: "\u0662"}}\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "policies.cli", "check", "--format", "json", str(manifest)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    import json

    [v] = [v for v in json.loads(proc.stdout)["violations"] if v["policy"] == "gpu-limits"]
    assert v["action"] == "deny" and "which is not a quantity" in v["message"]
