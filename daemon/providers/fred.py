"""FRED (Federal Reserve Bank of St. Louis): series observations."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from .base import DATED_OPTIONS, ENV_NAME, ApiRequest, Identity, Provider, redact_endpoint


class Fred(Provider):
    """One request per series (``/fred/series/observations``); records are
    its ``observations``, each with ``series_id`` added; the cursor is the
    last observation date per series."""

    name = "fred"
    default_base_url = "https://api.stlouisfed.org"
    default_records_path = "observations"
    options = {**DATED_OPTIONS, "api_key_env": ENV_NAME}
    required = [["series"]]
    min_request_interval = 0.5  # FRED allows 120 requests a minute

    def requests(self, cursor: Mapping[str, Any], environ: Mapping[str, str]) -> list[ApiRequest]:
        key, secrets, base = self.api_key(environ), self.secrets(environ), self.base_url()
        out = []
        for series in self.settings["series"]:
            params = {"series_id": series, "file_type": "json"}
            start = self.start_date(cursor.get(series))
            if start:
                params["observation_start"] = start
            public = f"{base}/fred/series/observations?{urlencode(params)}"
            url = public + (f"&{urlencode({'api_key': key})}" if key else "")
            out.append(ApiRequest(url, redact_endpoint(public, secrets), {}, {"series_id": series}, series))
        return out

    @property
    def has_identity(self) -> bool:
        return True

    def identity(self, record: Mapping[str, Any]) -> Identity | None:
        if not isinstance(record.get("date"), str):
            return None
        # realtime_start/end change with every call: only the value counts.
        return f"{record.get('series_id', '')}|{record['date']}", str(record.get("value"))

    def advance_cursor(self, request: ApiRequest, records: list[dict[str, Any]],
                       cursor: dict[str, Any]) -> dict[str, Any]:
        return self.latest(records, "date", cursor, request.cursor_key)
