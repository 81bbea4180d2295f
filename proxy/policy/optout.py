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
4. The message must *start* with a keyword. A keyword may be a phrase ("niet meer bellen",
   "geen sms"), and a message may split a keyword once more than it is written ("opt out",
   "uit schrijven", "af melden", "niet meer sms-en"): the longest run of leading words whose
   letters, joined, spell a keyword is the head. No leading greeting or filler ("Hoi, stop"
   -> None): the words must lead. A head that is a keyword of two kinds -> None.
5. Every other word must belong to a keyword of the same kind ("stop stop", "afmelden stop",
   "stop, niet meer bellen") or be a follower (politeness, "alles", what is being stopped:
   "stop aub", "stop met sms", "geen sms meer"). Any other word makes it an ordinary sentence
   -> None ("stop niet", "Uit de kunst", "stoppen met roken", "geen sms ontvangen?").
6. A keyword of another kind anywhere -> None, even if that word is also a follower: "stop
   start" or "help stop" cannot be read safely, so the message is not acted on here and goes
   the way of every non-keyword message (relayed to the organisation's dialer, where a person
   reads it).
"""

from __future__ import annotations

from typing import Literal

from proxy.settings import APOSTROPHES, OptOutKeywords, normalise_word

Intent = Literal["stop", "start", "help"]
INTENTS: tuple[Intent, ...] = ("stop", "start", "help")


def words(body: str) -> list[str]:
    """The message as normalised words (steps 1-2 above)."""
    text = normalise_word(body).translate(APOSTROPHES)
    out: list[str] = []
    for chunk in text.split():
        parts = "".join(ch if ch.isalnum() else " " for ch in chunk).split()
        if len(parts) > 1 and all(len(part) == 1 for part in parts):
            out.append("".join(parts))  # a.u.b. -> aub
        else:
            out.extend(parts)
    return out


def _squash(configured: frozenset[str]) -> frozenset[str]:
    # Settings allow a hyphen inside a configured word ("opt-out") and spaces between the
    # words of a phrase ("niet meer bellen"); messages lose their hyphens in step 2, so
    # keywords are compared as their letters run together: "optout", "nietmeerbellen".
    return frozenset(word.replace("-", "").replace(" ", "") for word in configured)


def _span(keywords: OptOutKeywords) -> int:
    """How many message words one keyword may take up: its own words and hyphenated parts,
    and one more, for a message that splits a word ("af melden")."""
    configured = keywords.stop | keywords.start | keywords.help
    return 1 + max((len(word.replace("-", " ").split()) for word in configured), default=1)


class _Reader:
    def __init__(self, message: list[str], keywords: OptOutKeywords) -> None:
        self.message = message
        self.sets: dict[Intent, frozenset[str]] = {
            "stop": _squash(keywords.stop),
            "start": _squash(keywords.start),
            "help": _squash(keywords.help),
        }
        self.span = _span(keywords)

    def kinds(self, text: str) -> set[Intent]:
        return {intent for intent in INTENTS if text in self.sets[intent]}

    def keyword_at(self, i: int) -> tuple[set[Intent], int]:
        """The longest keyword starting at word i: its kinds and its length in words."""
        for size in range(min(self.span, len(self.message) - i), 0, -1):
            found = self.kinds("".join(self.message[i:i + size]))
            if found:
                return found, size
        return set(), 0


def classify(body: str, keywords: OptOutKeywords) -> Intent | None:
    """The N12 intent of an inbound SMS body, or None when it is not a keyword reply."""
    message = words(body)
    if not message or len(message) > keywords.max_words:
        return None
    reader = _Reader(message, keywords)
    followers = _squash(keywords.followers)
    head, i = reader.keyword_at(0)
    if len(head) != 1:
        return None  # not a keyword, or a keyword of two kinds (per-organisation overlap)
    if any(reader.kinds(word) - head for word in message[i:]):
        return None  # step 6: two intents in one message
    while i < len(message):
        found, size = reader.keyword_at(i)
        if found:
            i += size  # a keyword of the same kind (step 6 ruled out the others)
        elif message[i] in followers:
            i += 1
        else:
            return None  # step 5: an ordinary sentence
    (intent,) = head
    return intent
