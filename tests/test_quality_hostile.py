"""Hostile input on the quality surfaces: field names a file's author chooses, objectives an
operator writes, quality documents an older (or hand-edited) row holds, and what the alert rules
and the operator's views make of them. Nothing here may fail a load, change a stored row, or
grow without bound."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.daemon.config import OBJECTIVES, build_config
from ingestd.daemon.errors import ConfigError

RATIO_KEYS = ("run_error_ratio", "invalid_record_ratio")


def objectives_doc(where: str, key: str, value: float) -> dict:
    table = {key: value}
    source = {"name": "q", "format": "jsonl"}
    if where == "source":
        return {"sources": [{**source, "objectives": table}]}
    return {"objectives": table, "sources": [source]}


def acceptable(key: str, value: float) -> bool:
    if not math.isfinite(value):
        return False
    return 0 <= value <= 1 if key in RATIO_KEYS else 0 < value <= 86400


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(["global", "source"]), key=st.sampled_from(OBJECTIVES),
       value=st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([math.nan, -math.nan, 0.0, 1.0]))
def test_an_objective_is_a_finite_number_in_its_range_or_the_config_is_refused(where, key, value):
    """NaN compares false with everything: an objective of NaN would silence its alert (and the
    status screen's verdict) for good, while the configuration looks set."""
    doc = objectives_doc(where, key, value)
    if acceptable(key, value):
        config = build_config(doc, base_dir=Path("/tmp"), environ={})
        assert config.sources["q"].objectives[key] == value
    else:
        with pytest.raises(ConfigError) as refused:
            build_config(doc, base_dir=Path("/tmp"), environ={})
        assert key in str(refused.value)
