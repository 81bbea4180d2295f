"""N12: is an inbound SMS a keyword reply — opt-out (STOP), opt-in (START) or help (HELP)?

Pure: message text + keyword sets -> intent. No I/O, no clock, no settings lookup.

N12 names reply *keywords* (STOP, UIT, STOPP, AFMELDEN, UITSCHRIJVEN and the English set),
matched case-insensitively, ignoring punctuation and trailing politeness ("Stop aub", "STOP.").
Twilio matches the whole body only, so "Stop. Thank you" is missed; a substring search would
be worse ("ik wil de bezorging stoppen?" is not an objection). The rule here sits in between:

1. Normalise: NFKD, drop combining marks, casefold (`proxy.settings.normalise_word`, the same
   form the configured keywords are stored in), drop apostrophes so "sms'jes" is one word.
2. Split on whitespace into chunks; inside a chunk every non-alphanumeric character separates
   words ("stop,stop" -> stop stop; "STOP!!!" -> stop; emoji vanish: "Stop 🙏" -> stop). A chunk
   that is only single letters with punctuation between them is one word: "a.u.b." -> aub,
   "s.v.p." -> svp, "S.T.O.P." -> stop (so an abbreviation counts once towards `max_words`).
3. No words (empty, only emoji or punctuation) -> None. More than `max_words` words -> None:
   a long message is a sentence, not a keyword reply.
4. The message must *start* with a keyword: the first two words joined ("opt out", "uit
   schrijven", "af melden") or else the first word. No leading greeting or filler ("Hoi, stop"
   -> None): the words must lead. A first word that is a keyword of two kinds -> None.
5. Every other word must be a keyword of the same kind ("stop stop", "afmelden stop") or a
   follower (politeness, "alles", what is being stopped: "stop aub", "stop met sms"). Any other
   word makes it an ordinary sentence -> None ("stop niet", "Uit de kunst").
6. A keyword of another kind anywhere -> None, even if that word is also a follower: "stop
   start" or "help stop" cannot be read safely, so the message is not acted on here and goes
   the way of every non-keyword message (relayed to the organisation's dialer, where a person
   reads it).
"""

from __future__ import annotations

from typing import Literal

from proxy.settings import OptOutKeywords, normalise_word

Intent = Literal["stop", "start", "help"]
INTENTS: tuple[Intent, ...] = ("stop", "start", "help")

# Deleted, not turned into a space: "sms'jes", "sms'en", "don't" stay one word.
_APOSTROPHES = dict.fromkeys(map(ord, "'\u2018\u2019\u02bc`"), None)


def words(body: str) -> list[str]:
    """The message as normalised words (steps 1-2 above)."""
    text = normalise_word(body).translate(_APOSTROPHES)
    out: list[str] = []
    for chunk in text.split():
        parts = "".join(ch if ch.isalnum() else " " for ch in chunk).split()
        if len(parts) > 1 and all(len(part) == 1 for part in parts):
            out.append("".join(parts))  # a.u.b. -> aub
        else:
            out.extend(parts)
    return out


def _squash(configured: frozenset[str]) -> frozenset[str]:
    # Settings allow a hyphen inside a configured word ("opt-out"); messages lose theirs in
    # step 2, so compare without it. "opt-out" then matches "optout" and, via the two-word
    # head of step 4, "opt out" / "Opt-out".
    return frozenset(word.replace("-", "") for word in configured)


def classify(body: str, keywords: OptOutKeywords) -> Intent | None:
    """The N12 intent of an inbound SMS body, or None when it is not a keyword reply."""
    message = words(body)
    if not message or len(message) > keywords.max_words:
        return None
    sets: dict[Intent, frozenset[str]] = {
        "stop": _squash(keywords.stop),
        "start": _squash(keywords.start),
        "help": _squash(keywords.help),
    }
    followers = _squash(keywords.followers)

    def kinds(word: str) -> set[Intent]:
        return {intent for intent in INTENTS if word in sets[intent]}

    joined = "".join(message[:2]) if len(message) > 1 else ""
    if joined and kinds(joined):
        head, rest = kinds(joined), message[2:]
    else:
        head, rest = kinds(message[0]), message[1:]
    if len(head) != 1:
        return None  # not a keyword, or a keyword of two kinds (per-organisation overlap)
    (intent,) = head
    for word in rest:
        if kinds(word) - head:
            return None  # step 6: two intents in one message
        if word not in sets[intent] and word not in followers:
            return None  # step 5: an ordinary sentence
    return intent
