"""The shared base of the settings sections and the walk over their models; no environment is read here."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from daemon.files import SECRET_FILE_MAX_BYTES, read_small_file

__all__ = ["SECRET_FILE_MAX_BYTES", "Section", "model_at", "nested_model", "read_small_file", "unknown_key_hint",
           "unknown_keys"]

class Section(BaseModel):
    # validate_default: a default (e.g. the shipped model path) is checked like a given value.
    # allow_inf_nan=False: `inf` and `nan` are never a bound (an infinite outbox overflowed once the model had
    # loaded). str_max_length: no setting is a megabyte of text; the few that may be long say so themselves.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False,
                              str_max_length=4096)


def nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the settings model an annotation holds, whether it is a map of them): `X`, `X | None`, `dict[str, X]`."""
    args = get_args(annotation)
    if len(args) == 2 and type(None) in args and get_origin(annotation) is not dict:  # X | None
        annotation = next(arg for arg in args if arg is not type(None))
        args = get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if get_origin(annotation) is dict and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return args[1], True
    return None, False


def model_at(model: type[BaseModel], path: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The settings model at a location such as ("cameras", "cam1", "rules"), or None if there is none."""
    keys = list(path)
    while keys:
        field = model.model_fields.get(str(keys.pop(0)))
        sub, is_map = nested_model(field.annotation) if field is not None else (None, False)
        if sub is None or (is_map and not keys):
            return None
        if is_map:
            keys.pop(0)
        model = sub
    return model


def unknown_key_hint(model: type[BaseModel], key: str) -> str:
    close = difflib.get_close_matches(key.lower(), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; accepted: {', '.join(model.model_fields)}"


def unknown_keys(model: type[BaseModel], data: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    """Each key of a JSON object (rules file, inline JSON) that `model` does not have, as `a.b.c` with a hint."""
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            yield f"{'.'.join((*path, str(key)))!r}{unknown_key_hint(model, str(key))}"
            continue
        sub, is_map = nested_model(field.annotation)
        if sub is not None and is_map and isinstance(value, dict):
            for name, entry in value.items():
                yield from unknown_keys(sub, entry, (*path, key, str(name)))
        elif sub is not None:
            yield from unknown_keys(sub, value, (*path, key))
