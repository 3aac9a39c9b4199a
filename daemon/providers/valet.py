"""Bank of Canada Valet: observations of series, or of a group."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from .base import DATED_OPTIONS, SERIES_ID, ApiRequest, Identity, Provider, canonical, redact_endpoint


class Valet(Provider):
    """One request (``/valet/observations/<series,…>/json`` or
    ``/valet/observations/group/<group>/json``); one record per date; the
    cursor is the last date."""

    name = "valet"
    default_base_url = "https://www.bankofcanada.ca"
    default_records_path = "observations"
    options = {**DATED_OPTIONS, "group": SERIES_ID}
    required = [["series"], ["group"]]
    min_request_interval = 0.2

    def requests(self, cursor: Mapping[str, Any], environ: Mapping[str, str]) -> list[ApiRequest]:
        group, series = self.settings.get("group"), self.settings.get("series", ())
        path = (f"/valet/observations/group/{quote(group)}/json" if group
                else f"/valet/observations/{','.join(quote(s) for s in series)}/json")
        start = self.start_date(cursor.get("last_date"))
        url = self.base_url() + path + (f"?{urlencode({'start_date': start})}" if start else "")
        return [ApiRequest(url, redact_endpoint(url, self.secrets(environ)))]

    @property
    def has_identity(self) -> bool:
        return True

    def identity(self, record: Mapping[str, Any]) -> Identity | None:
        if not isinstance(record.get("d"), str):
            return None
        return record["d"], canonical(record, ("d",))

    def advance_cursor(self, request: ApiRequest, records: list[dict[str, Any]],
                       cursor: dict[str, Any]) -> dict[str, Any]:
        return self.latest(records, "d", cursor, "last_date")
