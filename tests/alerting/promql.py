"""Metric names and label matchers in PromQL expressions, without a PromQL parser.

promtool 2.42 has no AST dump, so names are found lexically: string literals, label matcher blocks,
range and offset durations and grouping clauses are removed first; what is left that looks like an
identifier, is not a keyword and is not called like a function is a metric name.
"""

from __future__ import annotations

import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_OFFSET_OR_AT = re.compile(r"(?:\boffset|@)\s*-?[\w.]+", re.IGNORECASE)
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?=(\s*\()?)")
_SELECTOR = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*(?:\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')")

KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "atan2", "inf", "nan",
    # aggregation operators, which may be followed by a grouping clause instead of "("
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
})


def metric_names(expr: str) -> set[str]:
    """Every metric name an expression selects."""
    if "__name__" in expr:
        raise ValueError(f"selecting metrics by __name__ hides their names from this check: {expr}")
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET_OR_AT.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, called = match.group(1), match.group(2)
        if called or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def selector_labels(expr: str) -> dict[str, set[str]]:
    """Metric name -> the label names its selectors match on."""
    labels: dict[str, set[str]] = {}
    for name, matchers in _SELECTOR.findall(_STRING.sub('""', expr)):
        labels.setdefault(name, set()).update(_MATCHER.findall(matchers))
    return labels


def exposition_series(text: str) -> dict[str, set[str]]:
    """Sample names of a /metrics page (histograms as _bucket/_sum/_count) -> their label names."""
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z_:][\w:]*)(\{([^}]*)\})?\s", line)
        if match:
            series.setdefault(match.group(1), set()).update(re.findall(r'([A-Za-z_]\w*)="', match.group(3) or ""))
    return series
