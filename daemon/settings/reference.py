"""The configuration reference: every variable linewatch accepts, with its type, default, range and description,
walked from the settings models. One source for the typo check (`settings.known_variables`), for
`linewatch check-config --list` (text, `--json`) and for docs/configuration.md (`--markdown`), which
tests/settings/test_reference.py requires to be exactly what this prints."""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from daemon.settings.base import nested_model

ANY_NAME = "<NAME>"  # a dict key in a variable name, e.g. the class in LINEWATCH_RULES__CLASSES__<NAME>__IGNORE
_SCALARS: dict[Any, str] = {bool: "boolean", int: "integer", float: "number", str: "text", Path: "path",
                            SecretStr: "secret text"}


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    section: str  # the top-level section (camera, cameras, model, ...)
    type: str
    default: str  # "" when unset: the description says what then applies
    range: str
    description: str


def variables(root: type[BaseModel], env_name: Callable[[Iterable[str]], str],
              first: Iterable[Variable] = ()) -> list[Variable]:
    """Every variable of `root`'s fields, in the models' order, after `first`."""
    found = list(first)

    def walk(model: type[BaseModel], loc: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            here = (*loc, name)
            nested, is_map = nested_model(field.annotation)
            description = field.description or ""
            if nested is not None and is_map:
                found.append(Variable(env_name(here), here[0], "JSON object", "", _range(field),
                                      description + " (or the whole map as one JSON object)"))
                walk(nested, (*here, ANY_NAME))
            elif nested is not None:
                if loc:  # a nested section is also accepted whole, as JSON
                    found.append(Variable(env_name(here), here[0], "JSON object", "", "", description))
                walk(nested, here)
            else:
                found.append(Variable(env_name(here), here[0], type_name(field.annotation), _default(field),
                                      _range(field), description))

    walk(root, ())
    return found


def type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in args if arg is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "JSON object"
    if origin in (list, tuple):
        return "JSON list"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("default_shown"), str):
        return str(extra["default_shown"])  # a default that depends on where linewatch is installed
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or value == "" or value == {} or value == []:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, BaseModel | dict | list):
        return json.dumps(value.model_dump(mode="json") if isinstance(value, BaseModel) else value)
    return str(value)


def _range(field: FieldInfo) -> str:
    low = high = ""
    more = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = f"{_number(item.ge)} ≤ "
        elif isinstance(item, annotated_types.Gt):
            low = f"{_number(item.gt)} < "
        elif isinstance(item, annotated_types.Le):
            high = f" ≤ {_number(item.le)}"
        elif isinstance(item, annotated_types.Lt):
            high = f" < {_number(item.lt)}"
        elif isinstance(item, annotated_types.MinLen):
            more.append(f"at least {item.min_length} long")
        elif isinstance(item, annotated_types.MaxLen):
            more.append(f"at most {item.max_length} long")
        elif getattr(item, "pattern", None):
            more.append(f"matches {item.pattern}")
    bounds = [f"{low}x{high}"] if low or high else []
    return ", ".join(bounds + more)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def as_text(found: list[Variable]) -> str:
    return "".join(f"{v.name:44} {v.default or '-':12} {v.description}\n" for v in found)


def as_json(found: list[Variable]) -> str:
    return json.dumps([asdict(v) for v in found], indent=2, ensure_ascii=False) + "\n"


def as_markdown(found: list[Variable]) -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `linewatch check-config --list --markdown`; do not edit by hand:",
        "     tests/settings/test_reference.py fails when this page differs from what the command prints. -->",
        "",
        "Every variable linewatch reads, from its settings models. A wrong value, or a variable linewatch does not",
        "know, exits 2 naming the variable. `<NAME>` stands for a name you choose: a camera id, a class of the",
        "model. A section (a name ending where its fields begin) is also accepted whole, as one JSON object; the",
        "single variables override it. An empty default means unset: the description says what applies then.",
        "The same list: `linewatch check-config --list` (or `--json`).",
    ]
    section = None
    for v in found:
        if v.section != section:
            section = v.section
            lines += ["", f"## {section}", "", "| variable | type | default | range | description |",
                      "|---|---|---|---|---|"]
        cells = (f"`{v.name}`", v.type, f"`{v.default}`" if v.default else "", v.range, v.description)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
