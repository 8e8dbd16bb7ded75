"""The price file: what one GPU (or slice) of a class costs per hour, by capacity type.

YAML or JSON, validated against ``prices.schema.json`` beside this module; every error is reported
with its path::

    apiVersion: mlguard.io/v1alpha1
    kind: GpuPrices
    currency: USD
    prices:                       # GPU class -> price per GPU-hour, by capacity type
      NVIDIA-H100-80GB-HBM3: {on-demand: 6.98, spot: 2.45, reserved: 4.40}
      NVIDIA-L40S: {on-demand: 1.86, spot: 0.74}
      NVIDIA-A100-SXM4-80GB/mig-3g.40gb: {on-demand: 2.05}

A GPU class is the node's GPU product label (``nvidia.com/gpu.product`` as GPU feature discovery
writes it), with ``/mig-<profile>`` for a MIG slice and ``/shared`` for a time-sliced GPU. A class or
capacity type without a price is never costed at zero: its hours are reported as unpriced.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("prices.schema.json")
MAX_FILE_BYTES = 1 << 20


class PriceFileError(ValueError):
    """The price file cannot be read or is invalid; the message names the file and every error's path."""


@dataclass(frozen=True)
class PriceTable:
    currency: str
    prices: dict[str, dict[str, float]]
    source: str = ""

    def price(self, gpu_class: str, column: str) -> float | None:
        return self.prices.get(gpu_class, {}).get(column)


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def parse_prices(doc: Any, *, source: str = "<prices>") -> PriceTable:
    validator = jsonschema.Draft7Validator(_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]
        raise PriceFileError(f"{source}: invalid price file: " + "; ".join(lines))
    prices = {str(cls): {str(col): float(v) for col, v in cols.items()} for cls, cols in doc["prices"].items()}
    for cls, cols in prices.items():  # YAML's .inf/.nan are numbers to JSON Schema
        for col, value in cols.items():
            if not math.isfinite(value):
                raise PriceFileError(f"{source}: invalid price file: prices/{cls}/{col}: {value} is not a finite price")
    return PriceTable(currency=str(doc["currency"]), prices=prices, source=source)


def load_prices(path: str | Path) -> PriceTable:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PriceFileError(f"{path}: cannot read the price file: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise PriceFileError(f"{path}: the price file is larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PriceFileError(f"{path}: not YAML or JSON: {exc}") from None
    return parse_prices(doc, source=str(path))
