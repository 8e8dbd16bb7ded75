#!/usr/bin/env python3
"""How many of the CEL specification's conformance cases a Python CEL runtime passes.

    python tests/benchmarks/cel_conformance.py [--runtimes cel-expr-python,cel-python,common-expression-language]
        [--spec-package @bufbuild/cel-spec@0.6.1] [--failures N]

The cases come from the npm registry's @bufbuild/cel-spec (Buf's packaging of github.com/google/cel-spec's
tests/simple/testdata; 0.6.1 carries cel-spec v0.25.1), fetched with `npm pack` and read with `node`. Counted: the
cases that need no protobuf message (no `container`, no message or enum value, no message type in the
expression or the declarations) and are not check-only, so that every runtime can be asked the same thing.
A case passes when the expression compiles (checked, unless the case disables checking) and evaluates to the
expected value, of the expected type (int, uint and double told apart), or to an error when one is expected.

Runtimes are imported if installed: cel-expr-python (mlguard's, with every extension it registers that the
cases exercise), cel-python (a test dependency); common-expression-language goes in a scratch venv
(`pip install cel-expr-python cel-python common-expression-language`, then run this script with it).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PROTO = re.compile(r"TestAllTypes|NestedTestAllTypes|google\.protobuf\.|cel\.expr\.|GlobalEnum|TestRequired|"
                   r"proto2|proto3")
Case = dict[str, Any]


def load_cases(package: str) -> list[tuple[str, Case]]:
    """Every conformance case as (section/suite/name, the SimpleTest in protobuf JSON)."""
    with tempfile.TemporaryDirectory(prefix="cel-spec-") as tmp:
        packed = subprocess.run(["npm", "pack", package, "--silent"], cwd=tmp, check=True, capture_output=True,
                                text=True).stdout.strip().splitlines()[-1]
        module = Path(tmp) / "conformance.js"  # the one file needed (plain data, no require)
        with tarfile.open(Path(tmp) / packed) as tar:
            member = tar.extractfile("package/dist/cjs/testdata/conformance.js")
            if member is None:
                raise SystemExit(f"{package} has no dist/cjs/testdata/conformance.js")
            module.write_bytes(member.read())
        dumped = subprocess.run(["node", "-e", f"process.stdout.write(JSON.stringify(require({str(module)!r}).tests))"],
                                check=True, capture_output=True, text=True).stdout
    out: list[tuple[str, Case]] = []

    def walk(suite: dict[str, Any], path: tuple[str, ...]) -> None:
        for test in suite.get("tests", []):
            out.append(("/".join(path + (test["original"]["name"],)), test["original"]))
        for sub in suite.get("suites", []):
            walk(sub, path + (sub["name"],))

    walk(json.loads(dumped), ())
    return out


def needs_no_message(case: Case) -> bool:
    text = json.dumps(case)
    return not (case.get("container") or case.get("checkOnly") or "objectValue" in text or "messageType" in text
                or "enumValue" in text or PROTO.search(case["expr"]) or PROTO.search(json.dumps(case.get("typeEnv"))))


# ---- expected values: protobuf JSON cel.expr.Value -> (kind, value) ------------------------------------------

def expected(value: dict[str, Any]) -> tuple[str, Any]:
    if "int64Value" in value:
        return "int", int(value["int64Value"])
    if "uint64Value" in value:
        return "uint", int(value["uint64Value"])
    if "doubleValue" in value:
        return "double", float(value["doubleValue"])
    if "stringValue" in value:
        return "string", value["stringValue"]
    if "bytesValue" in value:
        return "bytes", base64.b64decode(value["bytesValue"])
    if "boolValue" in value:
        return "bool", value["boolValue"]
    if "nullValue" in value or value == {}:
        return "null", None
    if "listValue" in value:
        return "list", [expected(v) for v in value["listValue"].get("values", [])]
    if "mapValue" in value:
        return "map", {_key(expected(e["key"])): expected(e["value"]) for e in value["mapValue"].get("entries", [])}
    if "typeValue" in value:
        return "type", value["typeValue"]
    raise ValueError(f"unsupported expected value {value}")


def _key(kv: tuple[str, Any]) -> Any:
    return ("number", kv[1]) if kv[0] in ("int", "uint") else kv  # 1 and 1u are the same map key


def same(want: tuple[str, Any], got: tuple[str, Any]) -> bool:
    """Kind and value equal; ``?`` (a kind the runtime does not tell inside a container) matches int or uint."""
    (wk, wv), (gk, gv) = want, got
    if gk == "?" and wk in ("int", "uint"):
        gk = wk
    if wk != gk:
        return False
    if wk == "double":
        return (math.isnan(wv) and math.isnan(gv)) or wv == gv
    if wk == "list":
        return len(wv) == len(gv) and all(same(a, b) for a, b in zip(wv, gv, strict=True))
    if wk == "map":
        return wv.keys() == gv.keys() and all(same(wv[k], gv[k]) for k in wv)
    return bool(wv == gv)


def _plain(value: Any) -> tuple[str, Any]:
    """A Python value as (kind, value); ints are '?' (int or uint: the runtime's plain values do not say)."""
    if value is None:
        return "null", None
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, int):
        return "?", value
    if isinstance(value, float):
        return "double", value
    if isinstance(value, str):
        return "string", value
    if isinstance(value, bytes | bytearray):
        return "bytes", bytes(value)
    if isinstance(value, list):
        return "list", [_plain(v) for v in value]
    if isinstance(value, dict):
        return "map", {_key(_plain(k)): _plain(v) for k, v in value.items()}
    return type(value).__name__, value


# ---- runtimes ------------------------------------------------------------------------------------------------

class Failed(Exception):
    pass


def cel_expr_python() -> Callable[[Case], tuple[str, Any]]:
    from cel_expr_python import cel

    extensions = ("strings", "math", "encoders", "bindings", "optional", "sets", "lists", "two-var-comprehensions")
    config = cel.NewEnvConfigFromYaml("extensions:\n" + "".join(f"  - name: {n}\n" for n in extensions))
    primitive = {"INT64": cel.Type.INT, "UINT64": cel.Type.UINT, "DOUBLE": cel.Type.DOUBLE, "BOOL": cel.Type.BOOL,
                 "STRING": cel.Type.STRING, "BYTES": cel.Type.BYTES}
    top = {"INT": "int", "UINT": "uint", "DOUBLE": "double", "BOOL": "bool", "STRING": "string", "BYTES": "bytes",
           "NULL": "null"}
    type_names = {"INT": "int", "UINT": "uint", "DOUBLE": "double", "BOOL": "bool", "STRING": "string",
                  "BYTES": "bytes", "NULL": "null_type", "TYPE": "type", "LIST": "list", "MAP": "map",
                  "DURATION": "google.protobuf.Duration", "TIMESTAMP": "google.protobuf.Timestamp"}

    def run(case: Case) -> tuple[str, Any]:
        variables = {d["name"]: primitive.get(d.get("ident", {}).get("type", {}).get("primitive", ""), cel.Type.DYN)
                     for d in case.get("typeEnv", [])}
        for name in case.get("bindings", {}):
            variables.setdefault(name, cel.Type.DYN)
        env = cel.NewEnv(config=config, variables=variables)
        try:
            program = env.compile(case["expr"], disable_check=bool(case.get("disableCheck")))
        except RuntimeError as exc:
            raise Failed(f"compile: {exc}") from None
        data = {k: _python(expected(v["value"])) for k, v in case.get("bindings", {}).items()}
        value = program.eval(env.Activation(data))
        kind = value.type().name()
        if kind == "ERROR":
            return "error", str(value.value())
        if kind in top:
            return top[kind], value.value() if kind != "BYTES" else bytes(value.value())
        if kind == "TYPE":
            name = str(value.value().name())
            return "type", type_names.get(name.split("<")[0], name)
        if kind.startswith(("LIST", "MAP")):
            return _plain(value.plain_value())
        return kind.lower(), None

    return run


def cel_python() -> Callable[[Case], tuple[str, Any]]:
    import celpy  # type: ignore[import-not-found]
    from celpy import celtypes

    def convert(v: Any) -> tuple[str, Any]:
        if isinstance(v, celtypes.BoolType):
            return "bool", bool(v)
        if isinstance(v, celtypes.UintType):
            return "uint", int(v)
        if isinstance(v, celtypes.IntType):
            return "int", int(v)
        if isinstance(v, celtypes.DoubleType):
            return "double", float(v)
        if isinstance(v, celtypes.StringType):
            return "string", str(v)
        if isinstance(v, celtypes.BytesType):
            return "bytes", bytes(v)
        if isinstance(v, celtypes.ListType):
            return "list", [convert(x) for x in v]
        if isinstance(v, celtypes.MapType):
            return "map", {_key(convert(k)): convert(x) for k, x in v.items()}
        if v is None or isinstance(v, celtypes.NullType):
            return "null", None
        if isinstance(v, celtypes.TypeType):
            return "type", {"IntType": "int", "UintType": "uint", "DoubleType": "double", "BoolType": "bool",
                            "StringType": "string", "BytesType": "bytes", "ListType": "list", "MapType": "map",
                            "NullType": "null_type", "TypeType": "type"}.get(getattr(v, "__name__", str(v)), str(v))
        if isinstance(v, celpy.CELEvalError):
            return "error", str(v)
        if isinstance(v, list):
            return "list", [convert(x) for x in v]
        if isinstance(v, dict):
            return "map", {_key(convert(k)): convert(x) for k, x in v.items()}
        return type(v).__name__, v

    def to_cel(kv: tuple[str, Any]) -> Any:
        kind, v = kv
        return {"int": celtypes.IntType, "uint": celtypes.UintType, "double": celtypes.DoubleType,
                "string": celtypes.StringType, "bytes": celtypes.BytesType, "bool": celtypes.BoolType,
                "type": str}.get(kind, lambda x: x)(v) if kind not in ("list", "map", "null") else (
            celtypes.ListType([to_cel(x) for x in v]) if kind == "list" else
            celtypes.MapType({to_cel(k if isinstance(k, tuple) and k[0] != "number" else ("int", k[1])): to_cel(x)
                              for k, x in v.items()}) if kind == "map" else None)

    env = celpy.Environment()

    def run(case: Case) -> tuple[str, Any]:
        try:
            program = env.program(env.compile(case["expr"]))
        except Exception as exc:  # any compile failure is a failed case
            raise Failed(f"compile: {exc}") from None
        try:
            return convert(program.evaluate({k: to_cel(expected(v["value"]))
                                             for k, v in case.get("bindings", {}).items()}))
        except celpy.CELEvalError as exc:
            return "error", str(exc)

    return run


def common_expression_language() -> Callable[[Case], tuple[str, Any]]:
    import cel  # type: ignore[import-not-found]

    def run(case: Case) -> tuple[str, Any]:
        context = {k: _python(expected(v["value"])) for k, v in case.get("bindings", {}).items()}
        try:
            value = cel.evaluate(case["expr"], context)
        except Exception as exc:  # its errors are exceptions: compile or eval alike
            return "error", str(exc)
        return _plain(value)

    return run


def _python(kv: tuple[str, Any]) -> Any:
    kind, v = kv
    if kind == "list":
        return [_python(x) for x in v]
    if kind == "map":
        return {(k[1] if isinstance(k, tuple) else k): _python(x) for k, x in v.items()}
    return v


RUNTIMES: dict[str, Callable[[], Callable[[Case], tuple[str, Any]]]] = {
    "cel-expr-python": cel_expr_python, "cel-python": cel_python,
    "common-expression-language": common_expression_language}


def verdicts(run: Callable[[Case], tuple[str, Any]], cases: list[tuple[str, Case]]) -> Iterator[tuple[str, bool, str]]:
    for name, case in cases:
        try:
            got = run(case)
        except Failed as exc:
            yield name, False, str(exc)
            continue
        except Exception as exc:  # a runtime that crashes on a case fails it
            yield name, False, f"raised {exc!r}"
            continue
        if "evalError" in case:
            yield name, got[0] == "error", f"wanted an error, got {got!r}"
            continue
        # a case without a result matcher expects true (cel-spec's proto/cel/expr/conformance/test/simple.proto)
        matcher = case["typedResult"]["result"] if "typedResult" in case else case.get("value", {"boolValue": True})
        want = expected(matcher)
        yield name, same(want, got), f"wanted {want!r}, got {got!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--spec-package", default="@bufbuild/cel-spec@0.6.1")
    parser.add_argument("--failures", type=int, default=0, help="print the first N failures of each runtime")
    args = parser.parse_args()
    every = load_cases(args.spec_package)
    cases = [(n, c) for n, c in every if needs_no_message(c)]
    print(f"{args.spec_package}: {len(every)} conformance cases, {len(cases)} need no protobuf message and are "
          "not check-only")
    for runtime in args.runtimes.split(","):
        try:
            run = RUNTIMES[runtime]()
        except ImportError as exc:
            print(f"  {runtime:28s} not installed ({exc})")
            continue
        results = list(verdicts(run, cases))
        passed = sum(ok for _, ok, _ in results)
        by_section = Counter(n.split("/")[0] for n, ok, _ in results if not ok)
        worst = ", ".join(f"{s} {k}" for s, k in by_section.most_common(5))
        print(f"  {runtime:28s} {passed:5d} of {len(cases)} passed ({100 * passed / len(cases):.1f} %); "
              f"most failures in: {worst}")
        for name, _, why in [r for r in results if not r[1]][:args.failures]:
            print(f"      {name}: {why[:160]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
