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


def test_basic_reads_user_and_password_strictly() -> None:
    import base64

    def header(raw: bytes) -> str:
        return "Basic " + base64.b64encode(raw).decode()

    assert credentials.basic(header(b"AC1:tok:en")) == ("AC1", "tok:en")
    assert credentials.basic("basic " + base64.b64encode(b"a:b").decode()) == ("a", "b")
    for bad in ("", "Bearer x", "Basic", "Basic !!!", header(b"no-colon"),
                header(b"\xff:x"), "Basic " + base64.b64encode(b"a:b").decode() + "$"):
        assert credentials.basic(bad) is None
