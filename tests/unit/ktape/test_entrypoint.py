"""Every service start fails with one line naming the bad variable (exit 2)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("module", "variable", "value"), [
    ("queryd", "KTAPE_QUERYD_ADDR", "nowhere"),
    ("billingd", "KTAPE_BILLINGD_ADDR", "1.2.3.4:notaport"),
    ("ingestd", "KTAPE_FLUSH_ROWS", "-1"),
    ("ingestd", "KTAPE_MARKETS", "series:"),
    ("billingd", "KTAPE_BILLING_DSN", "mysql://user@db/billing"),
])
def test_bad_configuration_is_one_clear_line(module, variable, value):
    proc = subprocess.run([sys.executable, "-m", module], env={variable: value, "PATH": ""},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert f"{module}: configuration error: {variable}=" in proc.stderr
