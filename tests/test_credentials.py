"""The one-string form of a client's credentials (proxy/credentials.py), for fronts whose
provider takes a single API key."""

from __future__ import annotations

from proxy import credentials


def test_an_api_key_splits_back_into_client_and_token() -> None:
    token = credentials.derive_token("secret", "sip-trunk.1", 1)
    key = credentials.api_key("sip-trunk.1", token)
    assert credentials.split_api_key(key) == ("sip-trunk.1", token)


def test_a_key_without_both_parts_is_none() -> None:
    for key in ("", "no-dot", ".token", "client.", "."):
        assert credentials.split_api_key(key) is None
