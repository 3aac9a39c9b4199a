"""API providers, one module each. Adding one: a module with a ``Provider``
subclass (its keys, requests, records and cursor), named in ``PROVIDERS``."""
from __future__ import annotations

from typing import Any

from ingestd.daemon.sources import ApiSource

from .base import ApiRequest, Provider, redact_endpoint, scrub
from .fred import Fred
from .http_json import HttpJson
from .valet import Valet

PROVIDERS: dict[str, type[Provider]] = {p.name: p for p in (Fred, Valet, HttpJson)}

__all__ = ["PROVIDERS", "ApiRequest", "Provider", "provider_for", "redact_endpoint", "scrub", "source_schema_parts"]


def provider_for(source: ApiSource) -> Provider:
    return PROVIDERS[source.provider](source)


def source_schema_parts() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The [[sources]] keys of every provider (JSON Schema properties), and
    one rule per provider: the keys it requires, and no key of another."""
    properties: dict[str, Any] = {}
    for provider in PROVIDERS.values():
        properties.update(provider.options)
    rules = []
    for name, provider in PROVIDERS.items():
        foreign = sorted(set(properties) - set(provider.options))
        required = [{"required": keys} for keys in provider.required if keys]
        then: dict[str, Any] = {"not": {"anyOf": [{"required": [k]} for k in foreign]}} if foreign else {}
        if len(required) == 1:
            then.update(required[0])
        elif required:
            then["oneOf"] = required
        rules.append({"if": {"properties": {"provider": {"const": name}}, "required": ["provider"]}, "then": then})
    return properties, rules
