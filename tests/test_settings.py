"""Configuration: environment + TOML, validated at start-up with the key named."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.settings import (
    LOOPBACK_PEERS,
    ConfigError,
    FastAgiSettings,
    RuleSettings,
    TimeRange,
    load_settings,
    parse_rules,
)
from tests.conftest import REPO


def test_defaults_match_the_shipped_file() -> None:
    settings = load_settings({"PROXY_CONFIG": str(REPO / "config" / "consent-proxy.toml")})
    assert settings.rules == RuleSettings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.public_url == "http://127.0.0.1:8080"
    assert settings.twilio_api_base == "https://api.twilio.com"
    assert settings.sandbox is True
    hours = settings.rules.calling_hours
    assert hours.weekday == TimeRange(dt.time(9), dt.time(22))
    assert hours.saturday == TimeRange(dt.time(10), dt.time(16))
    assert hours.sunday is None
    assert hours.holiday is None
    assert hours.short_day_end == dt.time(18, 30)


def test_environment_values() -> None:
    settings = load_settings({
        "PROXY_HOST": "0.0.0.0", "PROXY_PORT": "9000", "PUBLIC_URL": "https://gate.example.nl/",
        "TWILIO_ACCOUNT_SID": "AC" + "a" * 32, "TWILIO_AUTH_TOKEN": "x",
        "PROXY_CONFIG": str(REPO / "config" / "consent-proxy.toml"), "LOG_LEVEL": "WARNING",
    })
    assert settings.port == 9000
    assert settings.public_url == "https://gate.example.nl"
    assert settings.sandbox is False
    assert settings.log_level == "warning"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"PROXY_PORT": "eighty"}, "PROXY_PORT"),
        ({"PROXY_PORT": "70000"}, "PROXY_PORT"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"TWILIO_ACCOUNT_SID": "AC" + "a" * 32}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": "nope", "TWILIO_AUTH_TOKEN": "x"}, "TWILIO_ACCOUNT_SID"),
        ({"PROXY_CONFIG": "/nonexistent/consent-proxy.toml"}, "PROXY_CONFIG"),
    ],
)
def test_bad_environment_names_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}"):
        load_settings(env)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"calling_hours": {"weekdays": "09:00-22:00"}}, "calling_hours.weekdays"),
        ({"calling_hours": {"weekday": "9-22"}}, "calling_hours.weekday"),
        ({"calling_hours": {"weekday": "22:00-09:00"}}, "calling_hours.weekday"),
        ({"calling_hours": {"saturday": "10:00-25:00"}}, "calling_hours.saturday"),
        ({"calling_hours": {"sunday": "open"}}, "calling_hours.sunday"),
        ({"calling_hours": {"short_day_end": "6pm"}}, "calling_hours.short_day_end"),
        ({"calling_hours": {"closed_dates": ["2026-13-01"]}}, "calling_hours.closed_dates"),
        ({"calling_hours": {"closed_dates": "2026-05-04"}}, "calling_hours.closed_dates"),
        ({"destinations": {"other": "maybe"}}, "destinations.other"),
        ({"relations": {"petition_signers": "yes"}}, "relations.petition_signers"),
        ({"upstream": {"timeout_seconds": 0}}, "upstream.timeout_seconds"),
        ({"limits": {"max_body_bytes": 10}}, "limits.max_body_bytes"),
        ({"telemetry": {}}, "telemetry"),
        ({"twilio": {"allow_sip": "yes"}}, "twilio.allow_sip"),
        ({"twilio": {"allow_application_sid": 1}}, "twilio.allow_application_sid"),
        ({"twilio": {"allow_everything": True}}, "twilio.allow_everything"),
        ({"twilio": {"relay_hosts": "dialer.example"}}, "twilio.relay_hosts"),
        ({"twilio": {"relay_hosts": ["https://dialer.example/"]}}, "twilio.relay_hosts"),
        ({"twilio": {"relay_hosts": ["*"]}}, "twilio.relay_hosts"),
    ],
)
def test_bad_rules_name_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}"):
        parse_rules(data)


def test_rules_parse() -> None:
    rules = parse_rules({
        "calling_hours": {"weekday": "09:30-21:00", "sunday": "12:00-17:00", "holiday": "closed",
                          "closed_dates": ["2026-05-04", dt.date(2026, 8, 15)]},
        "destinations": {"other": "deny"},
    })
    assert rules.calling_hours.weekday == TimeRange(dt.time(9, 30), dt.time(21))
    assert rules.calling_hours.sunday == TimeRange(dt.time(12), dt.time(17))
    assert rules.calling_hours.closed_dates == {dt.date(2026, 5, 4), dt.date(2026, 8, 15)}
    assert rules.other_destinations == "deny"
    assert (rules.allow_sip, rules.allow_application_sid) == (False, False)
    assert rules.relay_hosts == ()
    rules = parse_rules({"twilio": {"allow_sip": True, "allow_application_sid": True,
                                    "relay_hosts": ["Dialer.example", "*.cc.example"]}})
    assert (rules.allow_sip, rules.allow_application_sid) == (True, True)
    assert rules.relay_hosts == ("dialer.example", "*.cc.example")


def test_bad_config_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[calling_hours]\nweekday = "09:00-08:00"\n')
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve"], cwd=REPO, capture_output=True, text=True,
        env={"PROXY_CONFIG": str(config), "PROXY_SECRET": "x", "PATH": "/usr/bin:/bin"},
        timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "calling_hours.weekday" in result.stderr


def test_n9_published_number_basis_is_off_unless_switched_on() -> None:
    assert RuleSettings().published_number_basis is False
    assert parse_rules({}).published_number_basis is False
    assert parse_rules({"bases": {"published_number": False}}).published_number_basis is False
    assert parse_rules({"bases": {"published_number": True}}).published_number_basis is True


@pytest.mark.parametrize(("data", "key"), [
    ({"bases": {"published_number": "yes"}}, "bases.published_number"),
    ({"bases": {"published_number": 1}}, "bases.published_number"),
    ({"bases": {"customer": True}}, "bases.customer"),
    ({"bases": True}, "bases"),
])
def test_n9_bad_bases_name_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}"):
        parse_rules(data)


@pytest.mark.parametrize("on", [True, False])
def test_n9_serve_warns_at_start_up_when_published_number_is_on(
    tmp_path: Path, on: bool,
) -> None:
    config = tmp_path / "rules.toml"
    config.write_text(f"[bases]\npublished_number = {str(on).lower()}\n")
    # Without PROXY_SECRET serve stops right after reading the configuration: enough to see
    # what start-up logs about it, without a database.
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve"], cwd=REPO, capture_output=True, text=True,
        env={"PROXY_CONFIG": str(config), "PATH": "/usr/bin:/bin"}, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "PROXY_SECRET" in result.stderr
    warned = [line for line in result.stdout.splitlines()
              if '"published_number_basis_on"' in line]
    assert len(warned) == (1 if on else 0)
    if on:
        assert '"level":"warning"' in warned[0].replace(" ", "")


# --- [fastagi] ---------------------------------------------------------------------------

SID = "AC" + "0123456789abcdef" * 2


def test_fastagi_is_off_unless_listen_is_set() -> None:
    assert parse_rules({}).fastagi == FastAgiSettings()
    assert FastAgiSettings().listen is None
    assert FastAgiSettings().allow_peers == LOOPBACK_PEERS
    shipped = load_settings({"PROXY_CONFIG": str(REPO / "config" / "consent-proxy.toml")})
    assert shipped.rules.fastagi.listen is None


def test_fastagi_parses() -> None:
    agi = parse_rules({"fastagi": {
        "listen": "0.0.0.0:4573", "client": SID, "clients": [SID.replace("0", "1"), SID],
        "allow_peers": ["192.0.2.10", "10.20.0.0/16", "2001:db8::/32"],
        "read_timeout_seconds": 2, "max_header_bytes": 4096, "max_header_lines": 40,
        "max_sessions": 8}}).fastagi
    assert agi.listen == ("0.0.0.0", 4573)
    assert (agi.client, agi.clients) == (SID, (SID.replace("0", "1"), SID))
    assert agi.allow_peers == (ipaddress.ip_network("192.0.2.10/32"),
                               ipaddress.ip_network("10.20.0.0/16"),
                               ipaddress.ip_network("2001:db8::/32"))
    assert (agi.read_timeout_seconds, agi.max_header_bytes, agi.max_header_lines,
            agi.max_sessions) == (2.0, 4096, 40, 8)
    assert parse_rules({"fastagi": {"listen": "[::1]:4573", "client": SID}}).fastagi.listen == (
        "::1", 4573)
    # Loopback needs no allow_peers: only local peers may connect by default.
    for listen in ("127.0.0.1:4573", "localhost:4573", "[::1]:0"):
        local = parse_rules({"fastagi": {"listen": listen, "client": SID}}).fastagi
        assert local.allow_peers == LOOPBACK_PEERS
    # Clients named by the dialplan only: no default client.
    assert parse_rules({"fastagi": {"listen": "127.0.0.1:4573",
                                    "clients": [SID]}}).fastagi.client is None


@pytest.mark.parametrize(("section", "key"), [
    ({"listen": "4573"}, "fastagi.listen"),
    ({"listen": "127.0.0.1:70000", "client": SID}, "fastagi.listen"),
    ({"listen": "[::g]:4573", "client": SID}, "fastagi.listen"),
    ({"listen": 4573}, "fastagi.listen"),
    ({"listen": "127.0.0.1:4573"}, "fastagi.client"),  # whom would it decide as?
    ({"listen": "127.0.0.1:4573", "client": "AC123"}, "fastagi.client"),
    ({"listen": "127.0.0.1:4573", "clients": "AC" + "0" * 32}, "fastagi.clients"),
    ({"listen": "127.0.0.1:4573", "clients": ["dialer"]}, "fastagi.clients"),
    # FastAGI has no credentials: off loopback, who may connect must be said.
    ({"listen": "0.0.0.0:4573", "client": SID}, "fastagi.allow_peers"),
    ({"listen": "gate.example:4573", "client": SID}, "fastagi.allow_peers"),
    ({"listen": "127.0.0.1:4573", "client": SID, "allow_peers": []}, "fastagi.allow_peers"),
    ({"listen": "127.0.0.1:4573", "client": SID, "allow_peers": ["10.0.0.1/8"]},
     "fastagi.allow_peers"),
    ({"listen": "127.0.0.1:4573", "client": SID, "allow_peers": "10.0.0.0/8"},
     "fastagi.allow_peers"),
    ({"read_timeout_seconds": 0}, "fastagi.read_timeout_seconds"),
    ({"read_timeout_seconds": 61}, "fastagi.read_timeout_seconds"),
    ({"read_timeout_seconds": True}, "fastagi.read_timeout_seconds"),
    ({"max_header_bytes": 100}, "fastagi.max_header_bytes"),
    ({"max_header_lines": 2}, "fastagi.max_header_lines"),
    ({"max_sessions": 0}, "fastagi.max_sessions"),
    ({"max_sessions": "64"}, "fastagi.max_sessions"),
    ({"port": 4573}, "fastagi.port"),
])
def test_bad_fastagi_settings_name_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}"):
        parse_rules({"fastagi": section})
