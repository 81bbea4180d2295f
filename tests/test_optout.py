"""N12: SMS reply keywords — the corpus table, per-organisation words, and properties.

Pure: no database, no network, no clock; the hypothesis example database is off.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import tomllib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.policy.optout import INTENTS, classify, words
from proxy.settings import (
    DEFAULT_FOLLOWER_WORDS,
    DEFAULT_HELP_WORDS,
    DEFAULT_START_WORDS,
    DEFAULT_STOP_WORDS,
    ConfigError,
    OptOutKeywords,
    parse_rules,
)
from tests.conftest import REPO

CONFIG = REPO / "config" / "consent-proxy.toml"
DEFAULTS = OptOutKeywords()
PROPERTY = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _corpus() -> list[tuple[str, str]]:
    with (REPO / "tests" / "optout_corpus.csv").open(encoding="utf-8", newline="") as fh:
        return [(row["expected"], row["message"]) for row in csv.DictReader(fh)]


CORPUS = _corpus()
POSITIVES = [(expected, message) for expected, message in CORPUS if expected != "none"]
# Ordinary words: in no default keyword or follower list (checked below).
ORDINARY = ["fiets", "morgen", "factuur", "contract", "niet", "maar", "de", "jullie", "later",
            "bicycle", "tomorrow", "invoice", "my", "not", "the"]
GREETINGS = ["hoi", "hallo", "hi", "hey", "beste", "goedemiddag", "ok", "nee", "ja"]


def _expected(label: str) -> str | None:
    return None if label == "none" else label


# --- the corpus ----------------------------------------------------------------------------

@pytest.mark.parametrize(("expected", "message"), CORPUS, ids=[m for _e, m in CORPUS])
def test_n12_corpus(expected: str, message: str) -> None:
    assert classify(message, DEFAULTS) == _expected(expected)


def test_n12_corpus_is_large_varied_and_unique() -> None:
    labels = [expected for expected, _m in CORPUS]
    assert len(CORPUS) >= 80
    assert set(labels) == {"stop", "start", "help", "none"}
    assert min(labels.count(label) for label in ("stop", "none")) >= 30
    assert len({message for _e, message in CORPUS}) == len(CORPUS)


def test_n12_every_default_keyword_is_in_the_corpus() -> None:
    seen = {word for _e, message in POSITIVES for word in words(message)}
    seen |= {"".join(words(message)[:2]) for _e, message in POSITIVES}
    seen |= {" ".join(words(message)[:n]) for _e, message in POSITIVES for n in (2, 3)}
    keywords = set(DEFAULT_STOP_WORDS) | set(DEFAULT_START_WORDS) | set(DEFAULT_HELP_WORDS)
    assert keywords <= seen


# --- normalisation -------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "expected"), [
    ("Stop a.u.b.!", ["stop", "aub"]),
    ("stop,stop", ["stop", "stop"]),
    ("STOP!!! 🙏", ["stop"]),
    ("Stóp sms'jes", ["stop", "smsjes"]),
    ("S.T.O.P.", ["stop"]),
    ("dank u. a.u.b.", ["dank", "u", "aub"]),
    ("Opt-out", ["opt", "out"]),
    ("\u00a0\t\uff33\uff34\uff2f\uff30\n", ["stop"]),  # no-break space, full-width
    ("🛑 ... !!", []),
])
def test_n12_words(body: str, expected: list[str]) -> None:
    assert words(body) == expected


@pytest.mark.parametrize("body", ["Stop start", "Start stop", "Help stop", "Stop help",
                                  "Info uit", "Aanmelden afmelden"])
def test_n12_two_intents_are_ambiguous(body: str) -> None:
    assert classify(body, DEFAULTS) is None


def test_n12_keyword_of_two_kinds_is_ambiguous() -> None:
    keywords = dataclasses.replace(DEFAULTS, help=DEFAULTS.help | {"stop"})
    assert classify("Stop", keywords) is None
    assert classify("Uit", keywords) == "stop"


# --- configuration -------------------------------------------------------------------------

def test_n12_extra_words_per_organisation() -> None:
    optout = parse_rules(
        {"optout": {"organisations": {"org-x": {"stop": ["opzeggen"]}}}}).optout
    org_x, other = optout.for_organisation("org-x"), optout.for_organisation("org-y")
    assert classify("Opzeggen aub", org_x) == "stop"
    assert classify("Opzeggen aub", other) is None
    assert classify("Stop aub", org_x) == "stop"  # the shared words still count
    assert classify("Ik wil opzeggen", org_x) is None


def test_n12_configured_word_with_a_hyphen() -> None:
    org = parse_rules({"optout": {"organisations": {"o": {"start": ["opt-in"]}}}}
                      ).optout.for_organisation("o")
    assert classify("Opt-in", org) == "start"
    assert classify("opt in aub", org) == "start"
    assert classify("OPTIN", org) == "start"


def test_n12_configured_phrases() -> None:
    optout = parse_rules({"optout": {
        "stop": [*DEFAULT_STOP_WORDS, "Geen  berichten"],
        "organisations": {"o": {"stop": ["niet meer mailen", "geen sms'jes"]}}}}).optout
    shared, org = optout.keywords, optout.for_organisation("o")
    assert "geen berichten" in shared.stop  # spaces collapsed, casefolded
    assert classify("Geen berichten meer aub", shared) == "stop"
    assert classify("Niet meer mailen!", org) == "stop"
    assert classify("Niet meer mailen!", shared) is None
    assert "geen smsjes" in org.stop  # apostrophes dropped, as in messages
    assert classify("Geen sms'jes meer", org) == "stop"
    assert classify("Geen smsjes meer", org) == "stop"
    assert classify("niet meer mailen, graag bellen", org) == "stop"  # followers only
    assert classify("niet meer mailen, liever bellen", org) is None


@pytest.mark.parametrize(("section", "message"), [
    ({"followers": ["dank je"]}, "optout.followers: one word per entry"),
    ({"stop": ["geen sms!"]}, "optout.stop: words are letters and digits only"),
    ({"organisations": {"o": {"help": ["wat is dit?"]}}},
     "optout.organisations.o.help: words are letters and digits only"),
])
def test_n12_phrase_settings_are_validated(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_rules({"optout": section})


def test_n12_custom_max_words() -> None:
    two = dataclasses.replace(DEFAULTS, max_words=2)
    assert classify("Stop aub", two) == "stop"
    assert classify("Stop a.u.b.", two) == "stop"  # an abbreviation is one word
    assert classify("Stop aub graag", two) is None
    one = parse_rules({"optout": {"max_words": 1}}).optout.keywords
    assert classify("STOP!", one) == "stop"
    assert classify("Stop aub", one) is None


def test_n12_shipped_config_lists_exactly_the_defaults() -> None:
    with CONFIG.open("rb") as fh:
        data = tomllib.load(fh)
    section = data["optout"]
    assert section["stop"] == list(DEFAULT_STOP_WORDS)
    assert section["start"] == list(DEFAULT_START_WORDS)
    assert section["help"] == list(DEFAULT_HELP_WORDS)
    assert section["followers"] == list(DEFAULT_FOLLOWER_WORDS)
    assert section["max_words"] == DEFAULTS.max_words
    rules = parse_rules(data)
    assert rules.optout.keywords == DEFAULTS
    assert rules.optout.scope == "organisation"
    assert rules.optout.organisations == {}
    assert rules.relay_timeout_seconds == 5.0


def test_n12_shipped_config_example_organisation_works_when_uncommented() -> None:
    text = CONFIG.read_text("utf-8")
    example = re.search(r'^# (\[optout\.organisations\."energie-bv"\])\n# (stop = .+)$',
                        text, re.MULTILINE)
    assert example, "the commented energie-bv example is missing"
    optout = parse_rules(tomllib.loads(f"{text}\n{example[1]}\n{example[2]}\n")).optout
    assert classify("Opzeggen", optout.for_organisation("energie-bv")) == "stop"
    assert classify("Opzeggen", optout.for_organisation("other")) is None


def test_n12_default_lists_have_no_duplicates_or_overlap() -> None:
    lists = [DEFAULT_STOP_WORDS, DEFAULT_START_WORDS, DEFAULT_HELP_WORDS, DEFAULT_FOLLOWER_WORDS]
    for words_ in lists:
        assert len(set(words_)) == len(words_)
    flat = [word for words_ in lists for word in words_]
    assert len(set(flat)) == len(flat)


def test_ordinary_and_greeting_words_are_in_no_list() -> None:
    everything = DEFAULTS.stop | DEFAULTS.start | DEFAULTS.help | DEFAULTS.followers
    assert not (set(ORDINARY) | set(GREETINGS)) & everything


# --- properties ----------------------------------------------------------------------------

_VOCABULARY = sorted(DEFAULTS.stop | DEFAULTS.start | DEFAULTS.help | DEFAULTS.followers)
_WORD = st.one_of(st.sampled_from(_VOCABULARY), st.sampled_from(ORDINARY),
                  st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8))
_PUNCTUATION = "!?.,;:-()*\"…"
_ACCENTS = "\u0300\u0301\u0302\u0308"


@PROPERTY
@given(max_words=st.integers(1, 8), data=st.data())
def test_n12_longer_than_max_words_is_never_a_keyword_reply(max_words: int, data: Any) -> None:
    keywords = dataclasses.replace(DEFAULTS, max_words=max_words)
    message = data.draw(st.lists(_WORD, min_size=max_words + 1, max_size=max_words + 6))
    assert classify(" ".join(message), keywords) is None


@st.composite
def _decorated(draw: st.DrawFn, message: str) -> str:
    """The same message with other case, accents, punctuation, emoji and spacing."""
    out = [draw(st.sampled_from(["", " ", "\n", "¡", "\"", "("]))]
    for ch in message:
        if ch.isspace():
            out.append(draw(st.text(alphabet=_PUNCTUATION, max_size=3)))
        if ch.isalpha():
            ch = draw(st.sampled_from([ch, ch.upper(), ch.lower()]))
            ch += draw(st.sampled_from(["", *_ACCENTS]))
        out.append(ch)
    out.append(draw(st.text(alphabet=_PUNCTUATION, max_size=4)))
    out.append(draw(st.sampled_from(["", " 🙏", "👍", " :)", "  "])))
    return "".join(out)


@PROPERTY
@given(data=st.data(), case=st.sampled_from(POSITIVES))
def test_n12_case_accents_and_punctuation_never_change_a_positive(
        data: Any, case: tuple[str, str]) -> None:
    expected, message = case
    assert classify(data.draw(_decorated(message)), DEFAULTS) == expected


@PROPERTY
@given(case=st.sampled_from(POSITIVES), word=st.sampled_from(ORDINARY))
def test_n12_an_ordinary_word_after_a_positive_makes_a_sentence(
        case: tuple[str, str], word: str) -> None:
    assert classify(f"{case[1]} {word}", DEFAULTS) is None


@PROPERTY
@given(case=st.sampled_from(POSITIVES), greeting=st.sampled_from(GREETINGS))
def test_n12_the_keyword_must_lead(case: tuple[str, str], greeting: str) -> None:
    assert classify(f"{greeting.title()}, {case[1]}", DEFAULTS) is None


@PROPERTY
@given(body=st.text(max_size=200))
def test_n12_any_text_gets_an_intent_or_none(body: str) -> None:
    assert classify(body, DEFAULTS) in (*INTENTS, None)
