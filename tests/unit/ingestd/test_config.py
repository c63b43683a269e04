"""ingestd's own settings: the audit is off by default, and a bad value names the variable."""

from __future__ import annotations

import pytest

from ingestd.config import load_ingest_settings
from ktape.config import ConfigError


def test_the_audit_is_off_by_default_with_a_one_second_allowance():
    settings = load_ingest_settings({})
    assert (settings.audit_markets_per_minute, settings.audit_staleness_allowance_ms) == (0, 1000)


def test_audit_settings_are_read():
    settings = load_ingest_settings({"KTAPE_AUDIT_MARKETS_PER_MINUTE": "5",
                                     "KTAPE_AUDIT_STALENESS_ALLOWANCE_MS": "0"})
    assert (settings.audit_markets_per_minute, settings.audit_staleness_allowance_ms) == (5, 0)


@pytest.mark.parametrize("name, value", [("KTAPE_AUDIT_MARKETS_PER_MINUTE", "-1"),
                                         ("KTAPE_AUDIT_MARKETS_PER_MINUTE", "601"),
                                         ("KTAPE_AUDIT_MARKETS_PER_MINUTE", "2.5"),
                                         ("KTAPE_AUDIT_STALENESS_ALLOWANCE_MS", "60001")])
def test_a_bad_audit_setting_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_ingest_settings({name: value})
