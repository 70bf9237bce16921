"""Range and choice rules declared on the schema's fields, and the walk that checks a config.

A field states its rule where it states its default:

    lr: float = spec(2e-3, above(0))

`problems(cfg, TrainSchema)` walks a composed config along the schema tree (a field whose
default is a dataclass, or a node whose `_target_` names a schema) and returns one message per
value that breaks its rule, each naming the key, the value and what is allowed. `None` values
are skipped: a field that may be None says so in its type, and None means "automatic".
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

RULE = "rule"


@dataclass(frozen=True)
class Rule:
    """What a field allows: a test and its wording (`> 0`), or a list of choices."""

    test: Callable[[Any], bool] | None = None
    allowed: str = ""
    choices: tuple[str, ...] = ()

    def problem(self, key: str, value: Any) -> str | None:
        """The message for `key=value`, or None when the value is allowed."""
        if self.choices:
            if value in self.choices:
                return None
            close = difflib.get_close_matches(str(value), self.choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"{key}={value!r} is not one of {list(self.choices)}{hint}"
        valid = isinstance(value, (int, float)) and not isinstance(value, bool)
        if valid and isinstance(value, float):
            valid = math.isfinite(value)
        if valid and self.test is not None and self.test(value):
            return None
        return f"{key}={value!r} is out of range: allowed {self.allowed}"


def above(low: float, note: str = "") -> Rule:
    """`> low`."""
    return Rule(lambda v: v > low, f"> {low:g}{note}")


def at_least(low: float, note: str = "") -> Rule:
    """`>= low`."""
    return Rule(lambda v: v >= low, f">= {low:g}{note}")


def within(low: float, high: float, closed: str = "[]") -> Rule:
    """Between `low` and `high`; `closed` gives the brackets: `[]`, `[)`, `(]` or `()`."""
    lo_in, hi_in = closed[0] == "[", closed[1] == "]"

    def test(v: float) -> bool:
        return (v >= low if lo_in else v > low) and (v <= high if hi_in else v < high)

    return Rule(test, f"{closed[0]}{low:g}, {high:g}{closed[1]}")


def count_or_all(note: str = "") -> Rule:
    """`>= 1`, or -1 for all."""
    return Rule(lambda v: v >= 1 or v == -1, f">= 1, or -1 for all{note}")


def one_of(choices: tuple[str, ...]) -> Rule:
    """One of `choices`."""
    return Rule(choices=tuple(choices))


def spec(default: Any, rule: Rule | None = None) -> Any:
    """A dataclass field with its default and the rule its values must follow."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={RULE: rule})
    return field(default=default, metadata={RULE: rule})


def node_schema(f: dataclasses.Field, value: Any, by_target: Mapping[str, type]) -> type | None:
    """The schema of a field's value: its default's dataclass, or the one its `_target_` names."""
    factory = f.default_factory
    if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
        return factory  # type: ignore[return-value]
    if isinstance(value, DictConfig) and not value._is_none():
        target = value.get("_target_") if "_target_" in value else None
        return by_target.get(target) if isinstance(target, str) else None
    return None


def problems(
    node: DictConfig, schema: type, by_target: Mapping[str, type], path: str = ""
) -> list[str]:
    """Every rule of `schema` (and of the schemas below it) that `node` breaks."""
    found: list[str] = []
    for f in dataclasses.fields(schema):
        if f.name not in node:
            continue
        child = node._get_node(f.name)
        if child is None or child._is_missing():
            continue
        value = node[f.name]
        key = f"{path}{f.name}"
        sub = node_schema(f, value, by_target)
        if sub is not None and isinstance(value, DictConfig):
            found += problems(value, sub, by_target, key + ".")
            continue
        rule = f.metadata.get(RULE)
        if rule is not None and value is not None:
            plain = OmegaConf.to_container(value) if isinstance(value, DictConfig) else value
            message = rule.problem(key, plain)
            if message:
                found.append(message)
    return found


def check_args(schema: type, prefix: str, **values: Any) -> None:
    """Raise one ValueError naming every value of `values` that breaks its field's rule.

    For objects built from Python (`FineTuneModule(lr=0)`): the same rule, and the same message,
    as a config gets from thawkit.config.checks.validate. None values are skipped.
    """
    rules = {f.name: f.metadata.get(RULE) for f in dataclasses.fields(schema)}
    found = []
    for name, value in values.items():
        rule = rules[name]
        message = rule.problem(f"{prefix}.{name}", value) if rule and value is not None else None
        if message:
            found.append(message)
    if found:
        raise ValueError("; ".join(found))
