"""Any HTTP API answering JSON: a URL, query parameters, headers from the
environment, the records at ``records_path``."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ingestd.daemon.errors import PermanentError

from .base import ENV_NAME, HTTP_URL, ApiRequest, Identity, Provider, canonical, redact_endpoint


class HttpJson(Provider):
    """One request to ``url``; no cursor; records identified by their
    ``record_key`` fields when given."""

    name = "http_json"
    options = {
        "url": HTTP_URL,
        "params": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "headers_env": {"type": "object", "additionalProperties": ENV_NAME},
        "api_key_env": ENV_NAME,
        "record_key": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
    }
    required = [["url", "records_path"]]

    def secret_env(self) -> list[str]:
        return super().secret_env() + sorted(self.settings.get("headers_env", {}).values())

    def requests(self, cursor: Mapping[str, Any], environ: Mapping[str, str]) -> list[ApiRequest]:
        params = {k: str(v) for k, v in sorted(self.settings.get("params", {}).items())}
        key = self.api_key(environ)
        if key:
            params["api_key"] = key
        split = urlsplit(self.settings["url"])
        url = urlunsplit(split._replace(query=urlencode(parse_qsl(split.query, keep_blank_values=True)
                                                        + list(params.items()))))
        headers = {}
        for header, env in sorted(self.settings.get("headers_env", {}).items()):
            if not environ.get(env):
                raise PermanentError("api_error", f"environment variable {env} (headers_env.{header}) is not set")
            headers[header] = environ[env]
        return [ApiRequest(url, redact_endpoint(url, self.secrets(environ)), headers)]

    @property
    def has_identity(self) -> bool:
        return bool(self.settings.get("record_key"))

    def identity(self, record: Mapping[str, Any]) -> Identity | None:
        fields = self.settings.get("record_key") or ()
        if not fields or any(f not in record for f in fields):
            return None
        return "|".join(json.dumps(record[f], sort_keys=True) for f in fields), canonical(record)
