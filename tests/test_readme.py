"""Public contracts are documented: every reason code, basis and config key is in the README."""

from __future__ import annotations

import re

import pytest

from proxy.gate.codes import DENIAL_CODES, FAULTS
from proxy.policy.reasons import BASES, DENY_REASONS, REASONS
from proxy.settings import SECTIONS
from tests.conftest import REPO

README = (REPO / "README.md").read_text("utf-8")


@pytest.mark.parametrize("code", sorted(REASONS))
def test_reason_code_is_in_the_readme_table(code: str) -> None:
    doc = REASONS[code]
    row = re.search(rf"^\| `{code}` \| (.+?) \| (.+?) \| (.+?) \|$", README, re.MULTILINE)
    assert row, f"{code} has no row in the README reason-code table"
    assert row.group(2) == doc.rule


@pytest.mark.parametrize("basis", sorted(BASES))
def test_basis_is_documented(basis: str) -> None:
    assert re.search(rf"^\| `{basis}` \|", README, re.MULTILINE)


@pytest.mark.parametrize(
    "key", sorted(f"{section}.{key}" for section, keys in SECTIONS.items() for key in keys))
def test_config_key_is_documented(key: str) -> None:
    assert f"| `{key}` |" in README


@pytest.mark.parametrize(
    "variable",
    ["DATABASE_URL", "PROXY_HOST", "PROXY_PORT", "PROXY_CONFIG", "ADMIN_TOKEN",
     "TWILIO_API_BASE", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PUBLIC_URL",
     "PROXY_SECRET", "LOG_LEVEL", "OPTOUT_SPOOL_DIR", "DATABASE_URL_DIRECT",
     "DATABASE_STATEMENT_CACHE_SIZE", "PROXY_DRAIN_SECONDS"],
)
def test_environment_variable_is_documented(variable: str) -> None:
    assert f"| `{variable}` |" in README


@pytest.mark.parametrize("reason", sorted(DENIAL_CODES))
def test_error_code_is_in_the_readme_table(reason: str) -> None:
    status, code = DENIAL_CODES[reason]
    assert f"| {status} | {code} | `{reason}` |" in README


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_code_is_in_the_readme_table(fault: tuple[int, int]) -> None:
    status, code = fault
    assert f"| {status} | {code} | `{FAULTS[fault][0]}` |" in README


def test_every_deny_reason_has_an_error_code() -> None:
    assert set(DENY_REASONS) <= set(DENIAL_CODES)
    codes = [code for _status, code in DENIAL_CODES.values()]
    assert len(codes) == len(set(codes))
