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
