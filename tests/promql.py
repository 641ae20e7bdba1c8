"""The metric names a PromQL expression reads, and the names a Prometheus scrape exports.

For the tests that keep the Grafana dashboard and the alerting rules true to ``/metrics``.
The expression is tokenised (strings, numbers and durations, identifiers, Grafana variables,
punctuation and operators), then every identifier is a metric name except: a keyword, a
function or aggregation (followed by ``(``, or by ``by``/``without``), the label names in
``by``/``without``/``on``/``ignoring``/``group_left``/``group_right`` lists, label matchers
inside ``{}`` (but ``__name__="x"`` names ``x``) and ranges, subqueries and offsets in ``[]``.
A character it does not know fails loudly rather than being skipped.
"""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\])
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)
                (?:[a-zA-Z]+[0-9]*)*)
  | (?P<identifier>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<punctuation>[{}()\[\],@])
  | (?P<operator>==|!=|<=|>=|=~|!~|[-+*/%^=<>])
""", re.VERBOSE)

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "inf", "nan", "atan2"}
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_CLOSING = {"(": ")", "[": "]", "{": "}"}


def tokens(expression: str) -> list[tuple[str, str]]:
    """``(kind, text)`` of each token, whitespace and comments left out."""
    out = []
    position = 0
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None:
            raise ValueError(f"PromQL: cannot read {expression[position:position + 20]!r}"
                             f" at {position} of {expression!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            out.append((kind, match.group()))
        position = match.end()
    return out


def _skip_group(toks: list[tuple[str, str]], start: int) -> int:
    """The index just past the bracket group that opens at ``start``."""
    opening = toks[start][1]
    depth = 0
    for index in range(start, len(toks)):
        kind, text = toks[index]
        if kind == "punctuation" and text == opening:
            depth += 1
        elif kind == "punctuation" and text == _CLOSING[opening]:
            depth -= 1
            if depth == 0:
                return index + 1
    raise ValueError(f"PromQL: unclosed {opening!r}")


def _matcher_names(toks: list[tuple[str, str]]) -> set[str]:
    """Metric names given inside ``{...}``: ``__name__="x"``, or a bare quoted name."""
    names = set()
    for index, (kind, text) in enumerate(toks):
        if kind != "string":
            continue
        before = toks[index - 1] if index else ("punctuation", "{")
        after = toks[index + 1] if index + 1 < len(toks) else ("punctuation", "}")
        named = before == ("operator", "=") and index >= 2 and toks[index - 2][1] == "__name__"
        bare = before[1] in ("{", ",") and after[0] != "operator"  # {"a.name"}, UTF-8 names
        if named or bare:
            names.add(text[1:-1])
    return names


def metric_names(expression: str) -> set[str]:
    """The metric names that ``expression`` selects."""
    toks = tokens(expression)
    names: set[str] = set()
    index = 0
    while index < len(toks):
        kind, text = toks[index]
        following = toks[index + 1] if index + 1 < len(toks) else ("", "")
        if kind == "punctuation" and text == "{":
            end = _skip_group(toks, index)
            names |= _matcher_names(toks[index + 1:end - 1])
            index = end
            continue
        if kind == "punctuation" and text == "[":
            index = _skip_group(toks, index)
            continue
        if kind == "identifier":
            word = text.lower()
            if word in _LABEL_LISTS and following == ("punctuation", "("):
                index = _skip_group(toks, index + 1)
                continue
            function = following == ("punctuation", "(") or (
                following[0] == "identifier" and following[1].lower() in ("by", "without"))
            if word not in KEYWORDS and not function:
                names.add(text)
        index += 1
    return names


def grafana_query(query: str) -> str:
    """The PromQL in a Grafana variable query (``label_values(EXPR, label)`` and the like)."""
    match = re.fullmatch(r"\s*(?:label_values|query_result)\((.*?)(?:,\s*\w+)?\)\s*", query,
                         re.DOTALL)
    if match:
        return match.group(1)
    if re.fullmatch(r"\s*metrics\(.*\)\s*", query, re.DOTALL):
        raise ValueError(f"a metrics() query names no metric: {query!r}")
    return query


# The names a family's samples carry, by the type the text parser reports (it strips
# _total from a counter's name, so it is added back; _created is the client's creation time).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
    "stateset": ("",),
    "unknown": ("",),
}


def exported_names(exposition: str) -> set[str]:
    """Every metric name a scrape of ``exposition`` (Prometheus text format) gives PromQL.

    A family counts even while it has no sample yet (a labelled counter before its first
    increment): its ``# TYPE`` line is exported, and its samples will be named so.
    """
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names
