"""The config file's problems said for a person: one line each, naming the
key (and the source, for a ``[[sources]]`` table), never a schema dump and
never a value that may hold a secret.

A schema fragment may say what a value should be in a keyword of its own,
``x-expected`` ("an http:// or https:// URL"): a value that fails its
``pattern`` or its ``not`` is then said to be "not <x-expected>", rather
than not matching a regular expression.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema

from .logs import is_secret_name

# Keys whose values may hold a secret (a URL's password or token, a query
# parameter, a header mistaken for the name of its variable): a refused value
# under them, or under a secret name, is not repeated.
SECRET_HOLDING_KEYS = frozenset({"url", "base_url", "params", "headers_env"})


def key_path(error: jsonschema.ValidationError) -> str:
    parts: list[str] = []
    for p in error.absolute_path:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        else:
            parts.append(str(p))
    return ".".join(parts) or "(top level)"


def may_hold_secret(path: Iterable[Any]) -> bool:
    return any(isinstance(p, str) and (p in SECRET_HOLDING_KEYS or is_secret_name(p)) for p in path)


def describe_config_error(error: jsonschema.ValidationError) -> str:
    """A one-line message naming the offending key."""
    where = key_path(error)
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        keys = ", ".join(repr(k) + _did_you_mean(k, known) for k in extra)
        return f"{where}: unknown key {keys}" if where != "(top level)" else f"unknown key {keys}"
    if error.validator == "not" and isinstance(error.validator_value, dict) and "required" in error.validator_value:
        keys = ", ".join(repr(k) for k in error.validator_value["required"])
        why = error.schema.get("description") if isinstance(error.schema, dict) else None
        if why and isinstance(error.instance, dict) and isinstance(error.instance.get("name"), str):
            why = f"source {error.instance['name']!r}: {why}"
        return f"{where}: key {keys} is not allowed here ({why or 'it belongs to file sources'})"
    hidden = may_hold_secret(error.absolute_path)
    value = "the value" if hidden else _excerpt(error.instance)
    expected = error.schema.get("x-expected") if isinstance(error.schema, dict) else None
    if error.validator in ("pattern", "not") and expected:
        return f"{where}: {value} is not {expected}"
    if error.validator == "pattern":
        return f"{where}: {value} does not have the form this key takes"
    if error.validator == "not":
        return f"{where}: {value} is not allowed here"
    return f"{where}: {error.message.replace(repr(error.instance), value)}"


def without_echoes(errors: Iterable[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """``errors`` less those that only echo a type error at the same key:
    the rules of a table's keys (``not required``, ``oneOf`` of required
    keys) fail on a value that is no table, and its type error says it all."""
    errors = list(errors)
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    return [e for e in errors if e.validator == "type" or tuple(e.absolute_path) not in mistyped]


def name_the_source(message: str, error: jsonschema.ValidationError, doc: Mapping[str, Any]) -> str:
    """``message`` about a ``[[sources]]`` table, with the source's name
    when the table has one and the message does not say it yet."""
    path = list(error.absolute_path)
    sources = doc.get("sources")
    if len(path) < 2 or path[0] != "sources" or not isinstance(path[1], int) or not isinstance(sources, list):
        return message
    table = sources[path[1]] if path[1] < len(sources) else None
    name = table.get("name") if isinstance(table, dict) else None
    if not isinstance(name, str) or not name or f"source {name[:64]!r}" in message:
        return message
    return f"{message} (source {name[:64]!r})"


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
