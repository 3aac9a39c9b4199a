"""The registry of API providers, one module each.

A provider is a ``Provider`` subclass (base.py): its ``name`` (the
``provider`` of an API source), the source keys it takes (``options``, as
JSON Schema, and ``required``), its ``min_request_interval``, its requests,
records and cursor. ``register`` makes it known: the config's schema takes
its name, keys and rules at load, ``[poller] min_request_interval`` its
name, and the poller waits its interval unless the config overrides it. So
a provider is added in one place::

    from ingestd.daemon.providers import Provider, register

    @register
    class Example(Provider):
        name = "example"
        options = {"url": {"type": "string", "pattern": "^https?://"}}
        required = [["url"]]
        min_request_interval = 1.0

        def requests(self, cursor, environ): ...

``unregister("example")`` removes it again (a test leaves the registry as
it found it). The providers shipped are registered below.
"""
from __future__ import annotations

import re
from typing import Any

from ingestd.daemon.sources import ApiSource

from .base import ApiRequest, Provider, redact_endpoint, scrub
from .fred import Fred
from .http_json import HttpJson
from .valet import Valet

PROVIDERS: dict[str, type[Provider]] = {}

__all__ = ["PROVIDERS", "ApiRequest", "Provider", "provider_for", "redact_endpoint", "register", "scrub",
           "source_schema_parts", "unregister"]
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def register(provider: type[Provider]) -> type[Provider]:
    """Add ``provider`` to ``PROVIDERS`` and return it (a class decorator
    too). ValueError if it is no Provider subclass, its name is taken or
    not a plain lower-case name, or its interval is negative."""
    if not (isinstance(provider, type) and issubclass(provider, Provider)):
        raise ValueError(f"{provider!r} is not a Provider subclass")
    name = getattr(provider, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"provider name {name!r}: lower-case letters, digits and _, starting with a letter")
    if name in PROVIDERS:
        raise ValueError(f"provider {name!r} is already registered")
    if not provider.min_request_interval >= 0:
        raise ValueError(f"provider {name!r}: min_request_interval {provider.min_request_interval!r} is not >= 0")
    PROVIDERS[name] = provider
    return provider


def unregister(name: str) -> type[Provider]:
    """Remove the provider ``name`` from ``PROVIDERS`` (KeyError if absent); the class removed."""
    return PROVIDERS.pop(name)


def provider_for(source: ApiSource) -> Provider:
    return PROVIDERS[source.provider](source)


def source_schema_parts() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The [[sources]] keys of every provider (JSON Schema properties), and
    one rule per provider: the keys it requires, and no key of another
    (each refusal saying whose key it is, for config_errors.describe_config_error)."""
    properties: dict[str, Any] = {}
    for provider in PROVIDERS.values():
        properties.update(provider.options)
    rules = []
    for name, provider in PROVIDERS.items():
        foreign = sorted(set(properties) - set(provider.options))
        required = [{"required": keys} for keys in provider.required if keys]
        then: dict[str, Any] = {"allOf": [{"not": {"required": [key]}, "description": (
            f"provider {name!r} does not take it; it is a key of provider "
            + " and ".join(repr(n) for n, p in sorted(PROVIDERS.items()) if key in p.options))}
            for key in foreign]} if foreign else {}
        if len(required) == 1:
            then.update(required[0])
        elif required:
            then["oneOf"] = required
        rules.append({"if": {"properties": {"provider": {"const": name}}, "required": ["provider"]}, "then": then})
    return properties, rules


for _built_in in (Fred, Valet, HttpJson):
    register(_built_in)
