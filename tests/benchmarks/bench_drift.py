"""Benchmark: mlguard's drift statistics at the documented sizes, against the libraries a team would use.

    python tests/benchmarks/bench_drift.py [--reference-python PATH] [--quick]

Sizes (issue 6): KS + PSI on 100,000 x 20 features (reference and candidate each); MMD with 500
permutations on 2,000 x 384 embeddings (each side). The MMD permutation test is timed twice on the
same data and seed -- all permutations as matrix products, and one permutation at a time -- and the
two p-values must be equal.

Reference implementations are timed in the same run where installed: alibi-detect (``KSDrift``,
``MMDDrift`` with the PyTorch backend) and Evidently (``DataDriftPreset``). They are heavy (torch,
pandas, ...), so they may live in another environment: ``--reference-python /tmp/benchvenv/bin/python``
(or ``MLGUARD_BENCH_PYTHON``) runs that part in that interpreter on the same arrays (handed over as
.npy files). A library that cannot be imported is reported as "not installed".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 2.0
ROWS, FEATURES = 100_000, 20
EMB_ROWS, EMB_DIM = 2_000, 384
PERMUTATIONS = 500
LOOP_PERMUTATIONS = 100  # the per-permutation loop is slow: compare both engines at this count
ALIBI_PERMUTATIONS = LOOP_PERMUTATIONS  # alibi-detect's default; at 500 it alone takes over a minute


def make_data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(ROWS, FEATURES))
    cand = rng.normal(size=(ROWS, FEATURES))
    cand[:, :3] += 0.05  # three features drift a little
    emb_ref = rng.normal(size=(EMB_ROWS, EMB_DIM))
    emb_cand = rng.normal(size=(EMB_ROWS, EMB_DIM))
    emb_cand[:, :16] += 0.15
    # Column-major tabular data: each feature is one contiguous column, as the service holds them.
    ref, cand = np.asfortranarray(ref), np.asfortranarray(cand)
    return {"ref": ref, "cand": cand, "emb_ref": emb_ref, "emb_cand": emb_cand}


def timed(fn: Callable[[], Any], *, repeat: int = 1) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


# ------------------------------------------------------------------------------------------ ours


def bench_ours(data: dict[str, np.ndarray], *, quick: bool) -> dict[str, Any]:
    from rollouts.stats import adjust_p_values, ks_test, mmd_test, psi

    ref, cand = data["ref"], data["cand"]
    out: dict[str, Any] = {}

    def ks_all() -> list[float]:
        return adjust_p_values([ks_test(ref[:, j], cand[:, j]).p_value for j in range(FEATURES)], method="bh")

    def psi_all() -> list[float]:
        return [psi(ref[:, j], cand[:, j]).statistic for j in range(FEATURES)]

    out["ks_seconds"], adjusted = timed(ks_all, repeat=2)
    out["psi_seconds"], psis = timed(psi_all, repeat=2)
    out["ks_psi_seconds"] = out["ks_seconds"] + out["psi_seconds"]
    out["ks_drifted_features"] = [j for j, p in enumerate(adjusted) if p < 0.01]
    out["psi_max"] = max(psis)

    emb_ref, emb_cand = data["emb_ref"], data["emb_cand"]
    out["mmd_seconds"], res = timed(
        lambda: mmd_test(emb_ref, emb_cand, permutations=PERMUTATIONS, seed=0), repeat=2
    )
    out["mmd_p_value"] = res.p_value
    out["mmd_statistic"] = res.statistic
    loop_perms = 20 if quick else LOOP_PERMUTATIONS
    out["mmd_matrix_seconds_at_loop_count"], fast = timed(
        lambda: mmd_test(emb_ref, emb_cand, permutations=loop_perms, seed=0), repeat=2
    )
    out["mmd_loop_seconds"], slow = timed(
        lambda: mmd_test(emb_ref, emb_cand, permutations=loop_perms, seed=0, vectorised=False)
    )
    out["loop_permutations"] = loop_perms
    out["mmd_same_p_value"] = fast.p_value == slow.p_value
    out["mmd_p_values"] = [fast.p_value, slow.p_value]
    return out


# ------------------------------------------------------------------------------------ references


def bench_references(data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each reference library's timing, or the reason it could not run."""
    out: dict[str, Any] = {}
    ref, cand, emb_ref, emb_cand = data["ref"], data["cand"], data["emb_ref"], data["emb_cand"]

    try:
        from alibi_detect.cd import KSDrift
    except Exception as exc:  # any import failure: report, do not crash the benchmark
        out["alibi_ks"] = {"status": "not installed", "why": type(exc).__name__}
    else:
        seconds, pred = timed(lambda: KSDrift(ref, p_val=0.05).predict(cand))
        out["alibi_ks"] = {"status": "ok", "seconds": seconds, "is_drift": int(pred["data"]["is_drift"])}

    try:
        from alibi_detect.cd import MMDDrift
    except Exception as exc:
        out["alibi_mmd"] = {"status": "not installed", "why": type(exc).__name__}
    else:
        try:
            import torch

            torch.manual_seed(0)

            def alibi_mmd() -> Any:
                detector = MMDDrift(emb_ref.astype(np.float32), backend="pytorch", p_val=0.05,
                                    n_permutations=ALIBI_PERMUTATIONS, device="cpu")
                return detector.predict(emb_cand.astype(np.float32))

            seconds, pred = timed(alibi_mmd)
            out["alibi_mmd"] = {"status": "ok", "seconds": seconds, "p_value": float(pred["data"]["p_val"]),
                                "torch_threads": torch.get_num_threads()}
        except Exception as exc:
            out["alibi_mmd"] = {"status": "failed", "why": f"{type(exc).__name__}: {exc}"[:200]}

    try:
        import pandas as pd
        from evidently import Report
        from evidently.presets import DataDriftPreset
    except Exception as exc:
        for name in ("evidently_default", "evidently_ks", "evidently_psi"):
            out[name] = {"status": "not installed", "why": type(exc).__name__}
    else:
        cols = [f"f{j}" for j in range(FEATURES)]
        ref_df, cand_df = pd.DataFrame(ref, columns=cols), pd.DataFrame(cand, columns=cols)
        for name, method in (("evidently_default", None), ("evidently_ks", "ks"), ("evidently_psi", "psi")):
            try:
                preset = DataDriftPreset() if method is None else DataDriftPreset(method=method)
                seconds, _ = timed(lambda preset=preset: Report([preset]).run(current_data=cand_df,
                                                                            reference_data=ref_df))
                out[name] = {"status": "ok", "seconds": seconds}
            except Exception as exc:
                out[name] = {"status": "failed", "why": f"{type(exc).__name__}: {exc}"[:200]}
    for key, module in (("alibi_detect_version", "alibi_detect"), ("evidently_version", "evidently"),
                        ("torch_version", "torch")):
        try:
            out[key] = __import__(module).__version__
        except Exception:
            out[key] = None
    return out


def references_elsewhere(python: str, data: dict[str, np.ndarray]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mlguard-bench-") as tmp:
        for name, arr in data.items():
            np.save(Path(tmp) / f"{name}.npy", arr)
        proc = subprocess.run([python, __file__, "--references-from", tmp], capture_output=True, text=True,
                              timeout=600, check=False)
    if proc.returncode != 0:
        return {"error": f"{python} exited {proc.returncode}: {proc.stderr.strip()[-400:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------- report


def _row(label: str, seconds: float, note: str = "") -> str:
    return f"  {label:<44} {seconds:8.3f} s  {note}".rstrip()


def _ref_line(name: str, entry: dict[str, Any] | None, ours: float) -> str:
    if not entry:
        return f"  {name:<44} not run"
    if entry.get("status") != "ok":
        return f"  {name:<44} {entry.get('status')} ({entry.get('why', '')})"
    extra = f", p={entry['p_value']:.4g}" if "p_value" in entry else ""
    return _row(name, entry["seconds"], f"(reference / mlguard = {entry['seconds'] / ours:5.1f}x{extra})")


def report(ours: dict[str, Any], refs: dict[str, Any], where: str) -> None:
    ok = "ok" if ours["ks_psi_seconds"] < TARGET_SECONDS else "OVER TARGET"
    mmd_ok = "ok" if ours["mmd_seconds"] < TARGET_SECONDS else "OVER TARGET"
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    print(f"\nKS + PSI, {ROWS:,} x {FEATURES} features (each side)")
    print(_row(f"mlguard ks_test x{FEATURES} + BH", ours["ks_seconds"]))
    print(_row(f"mlguard psi x{FEATURES}", ours["psi_seconds"]))
    print(_row("mlguard KS + PSI total", ours["ks_psi_seconds"], f"[{ok}: < {TARGET_SECONDS} s]"))
    print(f"    drifted (BH, 0.01): features {ours['ks_drifted_features']}, max PSI {ours['psi_max']:.4f}")
    print(_ref_line("alibi-detect KSDrift", refs.get("alibi_ks"), ours["ks_seconds"]))
    both = ours["ks_psi_seconds"]
    print(_ref_line("evidently DataDriftPreset (default)", refs.get("evidently_default"), both))
    print(_ref_line("evidently DataDriftPreset(method=ks)", refs.get("evidently_ks"), ours["ks_seconds"]))
    print(_ref_line("evidently DataDriftPreset(method=psi)", refs.get("evidently_psi"), ours["psi_seconds"]))
    print(f"\nMMD, {EMB_ROWS:,} x {EMB_DIM} embeddings each side, {PERMUTATIONS} permutations")
    print(_row("mlguard mmd_test (matrix products)", ours["mmd_seconds"],
               f"[{mmd_ok}: < {TARGET_SECONDS} s], p={ours['mmd_p_value']:.4g}"))
    lp = ours["loop_permutations"]
    at_lp = ours["mmd_matrix_seconds_at_loop_count"]
    print(f"\nMMD permutations, same data and seed, {lp} permutations")
    print(_row("mlguard mmd_test (matrix products)", at_lp, f"p={ours['mmd_p_values'][0]:.4g}"))
    speedup = ours["mmd_loop_seconds"] / at_lp
    print(_row("mlguard mmd_test(vectorised=False) (loop)", ours["mmd_loop_seconds"],
               f"-> matrix products {speedup:.1f}x faster, p={ours['mmd_p_values'][1]:.4g}"))
    print(_ref_line(f"alibi-detect MMDDrift (pytorch, {ALIBI_PERMUTATIONS})", refs.get("alibi_mmd"), at_lp))
    print(f"  same p-value: {ours['mmd_same_p_value']} {ours['mmd_p_values']}")
    versions = {k: refs.get(k) for k in ("alibi_detect_version", "evidently_version", "torch_version")}
    print(f"\nreference libraries ({where}): {versions}")
    if "error" in refs:
        print(f"reference run failed: {refs['error']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-python", default=os.environ.get("MLGUARD_BENCH_PYTHON"),
                        help="interpreter with alibi-detect / evidently installed (default: this one)")
    parser.add_argument("--references-from", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer loop permutations (smoke run)")
    args = parser.parse_args()
    if args.references_from:
        data = {p.stem: np.load(p) for p in Path(args.references_from).glob("*.npy")}
        print(json.dumps(bench_references(data)))
        return 0
    data = make_data()
    ours = bench_ours(data, quick=args.quick)
    if args.reference_python:
        refs, where = references_elsewhere(args.reference_python, data), args.reference_python
    else:
        refs, where = bench_references(data), sys.executable
    report(ours, refs, where)
    return 0 if ours["mmd_same_p_value"] else 1


if __name__ == "__main__":
    sys.exit(main())
