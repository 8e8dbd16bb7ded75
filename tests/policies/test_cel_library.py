"""The Kubernetes CEL libraries on the chosen runtime, with the cases Kubernetes documents and tests
(k8s.io/apiserver/pkg/cel/library: quantity_test.go's table, the examples in urls.go, lists.go and
regex.go's doc comments), and the environment's boundaries: what the API server lacks is not offered."""

from __future__ import annotations

from typing import Any

import pytest

from policies.rules.celenv import EvalError, activation, compile_expression


def run(expr: str, **data: Any) -> Any:
    program = compile_expression(expr, scope="object", result="any")
    assert not isinstance(program, list), program
    return program.run(activation("object", {"object": data.get("object"), **data}))


QUANTITY = [  # quantity_test.go, TestQuantity (mul/div/divInt came after Kubernetes 1.33 and are left out)
    ('isQuantity("20")', True), ('isQuantity("20M")', True), ('isQuantity("20Mi")', True),
    ('isQuantity("20Mo")', False), ('isQuantity("10Mm")', False),
    ('quantity("200M") == quantity("200M")', True),
    ('quantity("200M") == quantity("0.2G") && quantity("0.2G") == quantity("200M")', True),
    ('quantity("2M") == quantity("0.002G") && quantity("2000k") == quantity("2M") && '
     'quantity("0.002G") == quantity("2000k")', True),
    ('quantity("200M") == quantity("0.3G")', False),
    ('quantity("50M").isLessThan(quantity("50Mi"))', True),
    ('quantity("50M").isLessThan(quantity("100M"))', True),
    ('quantity("100M").isLessThan(quantity("50M"))', False),
    ('quantity("50Mi").isGreaterThan(quantity("50M"))', True),
    ('quantity("150Mi").isGreaterThan(quantity("100Mi"))', True),
    ('quantity("50M").isGreaterThan(quantity("100M"))', False),
    ('quantity("200M").compareTo(quantity("0.2G"))', 0),
    ('quantity("50M").compareTo(quantity("50Mi"))', -1),
    ('quantity("50Mi").compareTo(quantity("50M"))', 1),
    ('quantity("50k").add(quantity("20")) == quantity("50.02k")', True),
    ('quantity("50k").add(20).isLessThan(quantity("50020"))', False),
    ('quantity("50k").sub(quantity("20")) == quantity("49.98k")', True),
    ('quantity("50k").sub(20) == quantity("49980")', True),
    ('quantity("50k").add(20).sub(quantity("100k")).asInteger()', -49980),
    ('quantity("50k").add(20).sub(quantity("100k")).sub(-50000).asInteger()', 20),
    ('quantity("50k").asInteger()', 50000),
    ('quantity("9999999999999999999999999999999999999G").isInteger()', False),
    ('quantity("50").isInteger()', True),
    ('quantity("50.703k").asApproximateFloat()', 50703.0),
    ('sign(quantity("-1m"))', -1), ('sign(quantity("0"))', 0),
]
LISTS = [  # lists.go
    ("[1, 2, 3].isSorted()", True), ("['a', 'b', 'b', 'c'].isSorted()", True), ("[2.0, 1.0].isSorted()", False),
    ("[1].isSorted()", True), ("[].isSorted()", True),
    ("[1, 3].sum()", 4), ("[1.0, 3.0].sum()", 4.0), ("[].sum()", 0),
    ("[1, 3].min()", 1), ("[1, 3].max()", 3), ("[1].min()", 1),
    ("[1, 2, 2, 3].indexOf(2)", 1), ("['a', 'b', 'b', 'c'].lastIndexOf('b')", 2), ("[1.0].indexOf(1.1)", -1),
    ("[].indexOf('string')", -1),
]
REGEX = [  # regex.go
    ("'abc 123'.find('[0-9]+')", "123"), ("'abc'.find('[0-9]+')", ""),
    ("'123 abc 456'.findAll('[0-9]+')", ["123", "456"]), ("'123 abc 456'.findAll('[0-9]+', 1)", ["123"]),
    ("'123 abc 456'.findAll('xyz')", []),
    # capturing groups do not change what is found: the whole match, as Go's FindString
    ("'key=value other=x'.findAll('([a-z]+)=(v[a-z]+)')", ["key=value"]),
    ("'a[b]c'.find('[]b[]+')", "[b]"), ("'f(x)'.find('[(]x[)]')", "(x)"), ("'f(x)'.find('\\\\(x')", "(x"),
]
URLS = [  # urls.go
    ("isURL('https://user:pass@example.com:80/path?query=val#fragment')", True), ("isURL('/absolute-path')", True),
    ("isURL('https://a:b:c/')", False), ("isURL('../relative-path')", False),
    ("url('/path').getScheme()", ""), ("url('https://example.com/').getScheme()", "https"),
    ("url('https://example.com:80/').getHost()", "example.com:80"),
    ("url('https://example.com/').getHost()", "example.com"),
    ("url('https://[::1]:80/').getHost()", "[::1]:80"), ("url('https://[::1]/').getHost()", "[::1]"),
    ("url('/path').getHost()", ""), ("url('https://example.com:80/').getHostname()", "example.com"),
    ("url('https://127.0.0.1:80/').getHostname()", "127.0.0.1"), ("url('https://[::1]:80/').getHostname()", "::1"),
    ("url('/path').getHostname()", ""), ("url('https://example.com:80/').getPort()", "80"),
    ("url('https://example.com/').getPort()", ""), ("url('/path').getPort()", ""),
    ("url('https://example.com/path').getEscapedPath()", "/path"),
    ("url('https://example.com/path with spaces/').getEscapedPath()", "/path%20with%20spaces/"),
    ("url('https://example.com').getEscapedPath()", ""),
    ("url('https://example.com/path?k1=a&k2=b&k2=c').getQuery()", {"k1": ["a"], "k2": ["b", "c"]}),
    ("url('https://example.com/path?key with spaces=value with spaces').getQuery()",
     {"key with spaces": ["value with spaces"]}),
    ("url('https://example.com/path?').getQuery()", {}), ("url('https://example.com/path').getQuery()", {}),
]
STRINGS_SETS_OPTIONAL = [  # the runtime's own extensions that Kubernetes enables (strings v2, sets, optional)
    ("'tacocat'.substring(0, 4)", "taco"), ("'a,b'.split(',')", ["a", "b"]), ("['a', 'b'].join('-')", "a-b"),
    ("'AbC'.lowerAscii()", "abc"), ("sets.contains([1, 2, 3], [2])", True),
    ("{'a': 1}.?b.orValue(5)", 5), ("'%s has %d GPUs'.format(['pod', 2])", "pod has 2 GPUs"),
]


@pytest.mark.parametrize(("expr", "want"), QUANTITY + LISTS + REGEX + URLS + STRINGS_SETS_OPTIONAL)
def test_library_case(expr: str, want: Any) -> None:
    got = run(expr)
    assert got == want and type(got) is type(want), (expr, got)


@pytest.mark.parametrize(("expr", "error"), [
    ('quantity("10Mo")', "quantities must match"),
    ('quantity("9999999999999999999999999999999999999G").asInteger()', "cannot convert value to integer"),
    ("[].min()", "min called on empty list"), ("[].max()", "max called on empty list"),
    ("url('../relative-path')", "URL parse error"), ("url('https://a:b:c/')", "URL parse error"),
    ("'abc'.find('(')", "missing )"),
    ("[1, 'a'].isSorted()", "no such overload"),
])
def test_library_error(expr: str, error: str) -> None:
    with pytest.raises(EvalError, match=None) as exc:
        run(expr)
    assert error in str(exc.value), str(exc.value)


def test_regex_runs_in_re2_so_a_pattern_from_the_object_cannot_backtrack() -> None:
    """(a+)+$ on 'aaaa...b' takes exponential time in a backtracking engine; RE2 answers at once."""
    obj = {"pattern": "(a+)+$", "text": "a" * 5000 + "b"}
    assert run("object.text.find(object.pattern)", object=obj) == ""
    assert run("object.text.findAll(object.pattern)", object=obj) == []


@pytest.mark.parametrize("expr", [
    "math.greatest(1, 2) == 2",          # cel-go/cel-cpp math extension: not in Kubernetes
    "base64.encode(b'x') == 'eA=='",     # encoders: not in Kubernetes
    "cel.bind(x, 1, x == 1)",            # bindings: VAP has `variables` instead
    "[3, 1].sort() == [1, 3]",           # the lists *extension* (sort, flatten): not Kubernetes' lists library
    "[1, 2].exists(i, v, v == i)",       # two-variable comprehensions: the runtime does not have them
    "authorizer.group('').resource('pods').check('get').allowed()",
])
def test_what_the_api_server_or_the_runtime_lacks_is_refused_at_compile(expr: str) -> None:
    result = compile_expression(expr, scope="object", result="bool")
    assert isinstance(result, list) and result, result


@pytest.mark.parametrize(("text", "pattern"), [
    ("abc 123", "[0-9]+"), ("abc", "[0-9]+"), ("abc", ""), ("", "^$"), ("héllo wörld", "w.r"),
    ("日本語テキスト", "語."),
    (" --model m --tensor-parallel-size 4", " (--tensor-parallel-size|-tp)[= ]+[0-9]+"), ("prod-a", "^prod-"),
    ("a-prod", "^prod-"), ("x\ny", "(?m)^y$"), ("a" * 5000 + "b", "(a+)+$"), ("aXbXc", "(X)(b)?"),
])
def test_the_first_match_taken_from_re2_directly_is_the_wrappers_own(text: str, pattern: str) -> None:
    from policies.rules import k8slib

    raw = text.encode()
    assert k8slib.first_span is k8slib._first_direct  # the wrapper has its compiled RE2 (google-re2 >= 1.1)
    assert k8slib._first_direct(raw, pattern) == k8slib._first_public(raw, pattern)
    found = k8slib._first_public(raw, pattern)
    assert k8slib.find(text, pattern) == (raw[found[0]:found[1]].decode() if found else "")
    assert k8slib.matches(text, pattern) == (found is not None)
