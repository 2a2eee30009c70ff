"""A new config key is one field plus one spec row in router/config.py
(ARCHITECTURE.md, "Adding a config key"): every section's spec table names
exactly its dataclass's fields, so a field without a check, or a check without a
field, fails here rather than at a user's start-up."""
from __future__ import annotations

import dataclasses

import pytest

from router import config

SECTIONS = [  # spec table -> the frozen dataclass it fills (`Cls(**checked)`)
    ("_LISTEN", config.ListenConfig), ("_ADMIN", config.AdminConfig), ("_GEO", config.GeoConfig),
    ("_PROBE", config.ProbeConfig), ("_BREAKER", config.BreakerConfig), ("_LIMITS", config.LimitsConfig),
    ("_LOG", config.LogConfig), ("_STATE", config.StateConfig), ("_DEGRADE", config.DegradeConfig),
    ("_REGION", config.RegionConfig), ("_NOTIFY", config.NotifyConfig),
]


@pytest.mark.parametrize("spec, cls", SECTIONS, ids=[s for s, _ in SECTIONS])
def test_spec_rows_are_the_dataclass_fields(spec, cls):
    rows = set(getattr(config, spec))
    fields = {f.name for f in dataclasses.fields(cls)}
    assert rows - fields == set(), f"config.{spec} checks keys {cls.__name__} has no field for"
    assert fields - rows == set(), f"{cls.__name__} has fields config.{spec} never checks"


def test_a_default_for_every_optional_section_key():
    """Leaving a key out takes the dataclass default: no section may need a key
    without saying so in its checker (regions and notify require theirs)."""
    for cls in (config.ListenConfig, config.AdminConfig, config.ProbeConfig, config.BreakerConfig,
                config.LimitsConfig, config.LogConfig, config.StateConfig, config.DegradeConfig):
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        assert not missing, f"{cls.__name__}: no default for {missing}"
