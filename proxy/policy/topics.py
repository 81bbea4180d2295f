"""Topic matching: slash-separated product topics such as `energy/gas/fixed`.

Matching is exact and case-sensitive on purpose: a consent gate must never read more into a
consent than was recorded. A contact without a topic is covered by nothing.
"""

from __future__ import annotations


def covers(granted: str, topic: str | None) -> bool:
    """N5: consent for `a/b` covers `a/b` and `a/b/...`, segment-wise (`a/bc` is not covered)."""
    if not topic or not granted:
        return False
    return topic == granted or topic.startswith(granted + "/")


def any_covers(granted: tuple[str, ...], topic: str | None) -> bool:
    for g in granted:  # noqa: SIM110 - a plain loop: any() + generator costs 2x on the hot path
        if covers(g, topic):
            return True
    return False


def first_segment(topic: str) -> str:
    return topic.partition("/")[0]


def similar(related: str, topic: str | None) -> bool:
    """N7: products are similar when they share the first topic segment (`energy/gas` and
    `energy/electricity`; not `insurance`)."""
    if not topic:
        return False
    head = first_segment(related)
    return bool(head) and head == first_segment(topic)


def any_similar(related: tuple[str, ...], topic: str | None) -> bool:
    for r in related:  # noqa: SIM110 - see any_covers
        if similar(r, topic):
            return True
    return False
