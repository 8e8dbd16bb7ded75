"""The Kubernetes CEL libraries a ValidatingAdmissionPolicy author expects, on top of the CEL runtime.

Behaviour ported from Kubernetes' own libraries (k8s.io/apiserver/pkg/cel/library: quantity.go, lists.go,
regex.go, urls.go, as of Kubernetes 1.33), with their documented examples as tests. The strings, sets and
optional libraries come with the runtime itself (cel-cpp's extensions, the ones Kubernetes enables).

The runtime's Python functions cannot hand back values of a type of their own, so a Quantity or a URL is a
map with one key (``{"kubernetes.Quantity": "0.2"}``) that only these functions read. A Quantity is kept
in its canonical value (``quantity("200M") == quantity("0.2G")`` holds, as in Kubernetes).

Regular expressions run in RE2 (google-re2: linear time, the syntax of Kubernetes' Go regexp), never in
Python's backtracking ``re``: a pattern taken from an object cannot stall the webhook.
"""

from __future__ import annotations

import itertools
import math
import urllib.parse
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any

import re2
from cel_expr_python import cel

from policies.quantity import QuantityError, parse_quantity

QUANTITY = "kubernetes.Quantity"
URL = "kubernetes.URL"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DYN = cel.Type.DYN


class LibraryError(ValueError):
    """A function applied to a value it does not take; the CEL evaluation reports it as an error."""


# ---- quantity (library/quantity.go) ---------------------------------------------------------------------

def _quantity(value: Any) -> Decimal:
    if isinstance(value, Mapping) and QUANTITY in value and len(value) == 1:
        return Decimal(str(value[QUANTITY]))
    raise LibraryError(f"{value!r} is not a quantity (make one with quantity('...'))")


def _make_quantity(amount: Decimal) -> dict[str, str]:
    canonical = format(amount.normalize(), "f") if amount != 0 else "0"
    return {QUANTITY: canonical}


def quantity(text: str) -> dict[str, str]:
    try:
        return _make_quantity(parse_quantity(text))
    except QuantityError as exc:
        raise LibraryError(f"quantities must match the regular expression of a Kubernetes quantity: {exc}") from exc


def is_quantity(text: str) -> bool:
    try:
        parse_quantity(text)
    except QuantityError:
        return False
    return True


def _compare(a: Decimal, b: Decimal) -> int:
    return (a > b) - (a < b)


def _as_int(amount: Decimal) -> int | None:
    if amount != amount.to_integral_value():
        return None
    whole = int(amount)
    return whole if INT64_MIN <= whole <= INT64_MAX else None


def quantity_as_integer(q: Any) -> int:
    whole = _as_int(_quantity(q))
    if whole is None:
        raise LibraryError("cannot convert value to integer")
    return whole


def quantity_as_float(q: Any) -> float:
    try:
        return float(_quantity(q))
    except OverflowError:  # pragma: no cover - Decimal -> float saturates to inf
        return math.inf


def quantity_add(q: Any, other: Any) -> dict[str, str]:
    addend = Decimal(other) if isinstance(other, int) and not isinstance(other, bool) else _quantity(other)
    return _make_quantity(_quantity(q) + addend)


def quantity_sub(q: Any, other: Any) -> dict[str, str]:
    subtrahend = Decimal(other) if isinstance(other, int) and not isinstance(other, bool) else _quantity(other)
    return _make_quantity(_quantity(q) - subtrahend)


# ---- lists (library/lists.go) ---------------------------------------------------------------------------

def _comparable(items: list[Any]) -> list[Any]:
    if any(isinstance(i, (Mapping, list)) for i in items):
        raise LibraryError("no such overload: lists of maps or lists are not comparable")
    kinds = {bool if isinstance(i, bool) else (float if isinstance(i, (int, float)) else type(i)) for i in items}
    if len(kinds) > 1:
        raise LibraryError("no such overload: the list mixes types that do not compare")
    return items


def is_sorted(items: list[Any]) -> bool:
    items = _comparable(list(items))
    return all(not (a > b) for a, b in itertools.pairwise(items))


def list_sum(items: list[Any]) -> Any:
    items = list(items)
    if any(isinstance(i, bool) or not isinstance(i, (int, float)) for i in items):
        raise LibraryError("no such overload: sum() takes a list of numbers")
    return sum(items, 0.0 if any(isinstance(i, float) for i in items) else 0)


def list_min(items: list[Any]) -> Any:
    items = _comparable(list(items))
    if not items:
        raise LibraryError("min called on empty list")
    return min(items)


def list_max(items: list[Any]) -> Any:
    items = _comparable(list(items))
    if not items:
        raise LibraryError("max called on empty list")
    return max(items)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def index_of(items: list[Any], item: Any) -> int:
    return next((i for i, x in enumerate(items) if _equal(x, item)), -1)


def last_index_of(items: list[Any], item: Any) -> int:
    return next((i for i in range(len(items) - 1, -1, -1) if _equal(items[i], item)), -1)


# ---- regex (library/regex.go), in RE2 -------------------------------------------------------------------

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # an invalid pattern is the caller's error, not a line on stderr


@lru_cache(maxsize=1024)  # bounded: patterns may come from objects
def compiled(pattern: str) -> Any:
    try:
        return re2.compile(pattern.encode(), options=_RE2_OPTIONS)
    except re2.error as exc:
        raise LibraryError(f"invalid regular expression {pattern!r}: {exc.args[0].decode(errors='replace')}") from exc


def _first_public(text: bytes, pattern: str) -> tuple[int, int] | None:
    found = compiled(pattern).search(text)
    return found.span() if found else None


def _first_direct(text: bytes, pattern: str) -> tuple[int, int] | None:
    start, end = compiled(pattern)._regexp.Match(_UNANCHORED, text, 0, len(text))[0]
    return (start, end) if start >= 0 else None


# The first match's byte span. The wrapper's search() builds a Match object in Python around one call of its
# compiled RE2 (4 us of a 5 us find() called from a rule); the span comes from that call alone when the wrapper
# has it, the same RE2 search (tests/policies/test_cel_k8s_library.py compares the two).
_UNANCHORED = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
first_span = _first_direct if _UNANCHORED is not None and hasattr(compiled("a"), "_regexp") else _first_public


def find(text: str, pattern: str) -> str:
    raw = text.encode()
    span = first_span(raw, pattern)
    return raw[span[0]:span[1]].decode() if span else ""


def find_all(text: str, pattern: str, limit: int = -1) -> list[str]:
    if limit == 0:
        return []
    out = []
    for found in compiled(pattern).finditer(text.encode()):
        out.append(found.group(0).decode())
        if len(out) == limit:
            break
    return out


def matches(text: str, pattern: str) -> bool:
    """CEL's matches() (RE2, unanchored), with the pattern compiled once."""
    return first_span(text.encode(), pattern) is not None


# ---- urls (library/urls.go) -----------------------------------------------------------------------------

def _request_uri_error(text: str) -> str | None:
    """Why Go's url.ParseRequestURI refuses the text (an absolute URI or an absolute path), or None."""
    if not text:
        return "empty url"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return "invalid control character in URL"
    if text.startswith("/"):
        return None
    scheme, sep, rest = text.partition(":")
    if not sep or not scheme or not scheme[0].isalpha() or not all(c.isalnum() or c in "+-." for c in scheme):
        return "invalid URI for request"
    if rest.startswith("//"):
        authority = rest[2:].split("/", 1)[0].split("?", 1)[0]
        host = authority.rpartition("@")[2]
        if host.startswith("["):
            port = host.partition("]")[2]
            if not host.count("]") or (port and not port.startswith(":")):
                return "invalid host"
        else:
            port = host.partition(":")[2] if ":" in host else ""
            if ":" in port:
                return f"invalid port {':' + port!r} after host"
            port = ":" + port if ":" in host else ""
        if port and not port[1:].isdigit() and port != ":":
            return f"invalid port {port!r} after host"
    elif not rest.startswith("/"):
        return "invalid URI for request"  # opaque URIs (mailto:x) are not request URIs
    return None


def url(text: str) -> dict[str, str]:
    problem = _request_uri_error(text)
    if problem:
        raise LibraryError(f"URL parse error during conversion from string: {problem}")
    return {URL: text}


def is_url(text: str) -> bool:
    return _request_uri_error(text) is None


def _parsed(value: Any) -> urllib.parse.SplitResult:
    if not (isinstance(value, Mapping) and URL in value and len(value) == 1):
        raise LibraryError(f"{value!r} is not a URL (make one with url('...'))")
    return urllib.parse.urlsplit(str(value[URL]))


def url_host(value: Any) -> str:
    return _parsed(value).netloc.rpartition("@")[2]


def url_hostname(value: Any) -> str:
    host = url_host(value)
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.partition(":")[0]


def url_port(value: Any) -> str:
    host = url_host(value)
    tail = host.partition("]")[2] if host.startswith("[") else (":" + host.partition(":")[2] if ":" in host else "")
    return tail[1:] if tail.startswith(":") else ""


def url_escaped_path(value: Any) -> str:
    return urllib.parse.quote(urllib.parse.unquote(_parsed(value).path), safe="/!$&'()*+,;=:@~")


def url_query(value: Any) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(_parsed(value).query, keep_blank_values=True)


# ---- declarations ---------------------------------------------------------------------------------------

def _fn(name: str, overload: str, result: Any, params: list[Any], impl: Callable[..., Any], *,
        member: bool) -> cel.FunctionDecl:
    return cel.FunctionDecl(name, [cel.Overload(overload, result, params, is_member=member, impl=impl)])


def kubernetes_library() -> cel.CelExtension:
    """The Kubernetes functions, declared for the runtime (abstract Kubernetes types are dyn here)."""
    s, b, i, d = cel.Type.STRING, cel.Type.BOOL, cel.Type.INT, cel.Type.DOUBLE
    lst = cel.Type.List(DYN)
    decls = [
        _fn("quantity", "string_to_quantity", DYN, [s], quantity, member=False),
        _fn("isQuantity", "is_quantity_string", b, [s], is_quantity, member=False),
        _fn("sign", "quantity_sign", i, [DYN], lambda q: _compare(_quantity(q), Decimal(0)), member=False),
        _fn("isGreaterThan", "quantity_is_greater_than", b, [DYN, DYN],
            lambda a, c: _compare(_quantity(a), _quantity(c)) == 1, member=True),
        _fn("isLessThan", "quantity_is_less_than", b, [DYN, DYN],
            lambda a, c: _compare(_quantity(a), _quantity(c)) == -1, member=True),
        _fn("compareTo", "quantity_compare_to", i, [DYN, DYN],
            lambda a, c: _compare(_quantity(a), _quantity(c)), member=True),
        _fn("asApproximateFloat", "quantity_get_float", d, [DYN], quantity_as_float, member=True),
        _fn("asInteger", "quantity_get_int", i, [DYN], quantity_as_integer, member=True),
        _fn("isInteger", "quantity_is_integer", b, [DYN], lambda q: _as_int(_quantity(q)) is not None,
            member=True),
        _fn("add", "quantity_add", DYN, [DYN, DYN], quantity_add, member=True),
        _fn("sub", "quantity_sub", DYN, [DYN, DYN], quantity_sub, member=True),
        _fn("isSorted", "list_is_sorted", b, [lst], is_sorted, member=True),
        _fn("sum", "list_sum", DYN, [lst], list_sum, member=True),
        _fn("min", "list_min", DYN, [lst], list_min, member=True),
        _fn("max", "list_max", DYN, [lst], list_max, member=True),
        _fn("indexOf", "list_a_index_of_int", i, [lst, DYN], index_of, member=True),
        _fn("lastIndexOf", "list_a_last_index_of_int", i, [lst, DYN], last_index_of, member=True),
        _fn("find", "string_find_string", s, [s, s], find, member=True),
        cel.FunctionDecl("findAll", [
            cel.Overload("string_find_all_string", cel.Type.List(s), [s, s], is_member=True, impl=find_all),
            cel.Overload("string_find_all_string_int", cel.Type.List(s), [s, s, i], is_member=True, impl=find_all)]),
        _fn("url", "string_to_url", DYN, [s], url, member=False),
        _fn("isURL", "is_url_string", b, [s], is_url, member=False),
        _fn("getScheme", "url_get_scheme", s, [DYN], lambda u: _parsed(u).scheme, member=True),
        _fn("getHost", "url_get_host", s, [DYN], url_host, member=True),
        _fn("getHostname", "url_get_hostname", s, [DYN], url_hostname, member=True),
        _fn("getPort", "url_get_port", s, [DYN], url_port, member=True),
        _fn("getEscapedPath", "url_get_escaped_path", s, [DYN], url_escaped_path, member=True),
        _fn("getQuery", "url_get_query", cel.Type.Map(s, cel.Type.List(s)), [DYN], url_query, member=True),
    ]
    return cel.CelExtension("kubernetes", decls)


INTERNAL_MATCHES = "mlguardMatches"


def internal_library() -> cel.CelExtension:
    """What only the engine writes into the programs it runs: matches() with compiled patterns (the runtime's
    own recompiles its pattern on every call)."""
    s, b = cel.Type.STRING, cel.Type.BOOL
    return cel.CelExtension("mlguard", [cel.FunctionDecl(INTERNAL_MATCHES, [
        cel.Overload("mlguard_matches_string", b, [s, s], is_member=True, impl=matches),
        cel.Overload("mlguard_matches_string_string", b, [s, s], is_member=False, impl=matches)])])
