"""Kubernetes resource quantities, parsed exactly (Decimal)."""

from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
# ASCII digits only (re's \d would take any Unicode digit, "١٢" included) and no surrounding
# whitespace: what the API server's resource.ParseQuantity accepts (k8s.io/apimachinery
# pkg/api/resource/quantity.go), so mlguard never reads a value the cluster would read otherwise.
_QUANTITY = re.compile(r"([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?",
                       re.ASCII)


class QuantityError(ValueError):
    """A value that is not a Kubernetes quantity."""


def parse_quantity(value: object) -> Decimal:
    """Parse a Kubernetes quantity ("2", "500m", "16Gi", 1.5) into an exact Decimal."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if not isinstance(value, str):
        raise QuantityError(f"{value!r} is not a quantity")
    return _parse_text(value)


@functools.lru_cache(maxsize=4096)
def _parse_text(value: str) -> Decimal:
    """A quantity written as text; remembered (a Decimal is immutable, and a review names the same few
    quantities again and again), bounded. A value that is not a quantity raises each time."""
    match = _QUANTITY.fullmatch(value)
    if not match:
        raise QuantityError(f"{value!r} is not a quantity (expected a number with an optional suffix "
                            "such as m, Ki, Mi, Gi, k, M, G)")
    number, suffix = match.group(1), match.group(2) or ""
    if "e" in number.lower() and suffix in ("E",):
        raise QuantityError(f"{value!r} is ambiguous")
    try:
        return Decimal(number) * _SUFFIXES[suffix]
    except InvalidOperation as exc:  # pragma: no cover - regex already guards this
        raise QuantityError(f"{value!r} is not a quantity") from exc


def is_whole(quantity: Decimal) -> bool:
    """True when the quantity is a whole number (GPUs cannot be split by a quantity)."""
    return quantity == quantity.to_integral_value()


def format_quantity(quantity: Decimal) -> str:
    """Render a Decimal the way a person writes it in a manifest."""
    if is_whole(quantity):
        return str(int(quantity))
    return format(quantity.normalize(), "f")
