"""The provider-neutral gate: what every way in shares, on plain values, never on a request.

- `evaluation.py`: number parsing, one fact lookup and the pure engine (`evaluate`);
- `values.py`: what goes in (`Proposal`, `Caller`) and comes out (`Claim`, `Committed`, ...);
- `core.py`: the `Gate`, built once per app: claim, decide, commit, finish;
- `consumption.py`: giving back what a contact that never happened consumed (N5, N6);
- `codes.py`: the public denial and fault codes every way in answers with.

Adapters (proxy/fronts/, proxy/dial/) import the gate; the gate imports no adapter and no web
framework.
"""

from proxy.gate.codes import DENIAL_CODES, FAULTS
from proxy.gate.core import Gate
from proxy.gate.evaluation import (
    WITHHELD,
    Evaluation,
    FactLoader,
    evaluate,
    sender_key,
    store_facts,
)
from proxy.gate.values import (
    Answer,
    Caller,
    Claim,
    Clock,
    Committed,
    Entry,
    GiveBack,
    Outcome,
    Proposal,
    Recordable,
)

__all__ = [
    "DENIAL_CODES",
    "FAULTS",
    "WITHHELD",
    "Answer",
    "Caller",
    "Claim",
    "Clock",
    "Committed",
    "Entry",
    "Evaluation",
    "FactLoader",
    "Gate",
    "GiveBack",
    "Outcome",
    "Proposal",
    "Recordable",
    "evaluate",
    "sender_key",
    "store_facts",
]
