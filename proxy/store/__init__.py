"""Every SQL statement of consent-proxy but the migrations (sql/) and the dial API's attempts
(proxy/dial/attempts.py), a module per job. Returns plain dataclasses and dicts; knows no HTTP
and no provider's wire format.

- facts: what the decision engine reads, one contact, a group, or a scrub's batch;
- decisions: recording decisions and outcomes (group commit), idempotency, giving back;
- registry: organisations, senders, consents, relationships, objections, lifting one;
- listing: the registry a page at a time; events: who changed what (registry_events);
- clients: dialers' credentials; subjects: all that is held about one number, erasure;
- inbound: the opt-out loop's inbound messages, STOP and START, objections in a call;
- relays: relay targets and what their callbacks report; audit: the chain and retention.

Callers use the names below as `store.X`.
"""

from __future__ import annotations

from proxy.store.audit import (
    ChainReport,
    StoredCheckpoint,
    chain_head,
    insert_checkpoint,
    latest_checkpoint,
    prune,
    verify_chain,
)
from proxy.store.clients import (
    CLIENT_ID,
    Client,
    create_client,
    get_client,
    list_clients,
    relay_client,
    rotate_client,
    set_client_enabled,
)
from proxy.store.decisions import (
    WRITE_SQL,
    DecisionRecord,
    DialClaim,
    DialClaimLost,
    IdempotencyClaim,
    RequestAlreadyUsed,
    Reversal,
    ReversalWhy,
    StoredResponse,
    complete_idempotent,
    find_idempotent,
    list_decisions,
    outcome_args,
    owned_sids,
    record_args,
    record_decision,
    reverse_consumption,
    write_batch,
)
from proxy.store.events import list_events, record_event
from proxy.store.facts import (
    _BULK_SETTINGS,
    _FACTS_SQL,
    facts_from_bulk,
    fetch_facts_bulk,
    load_facts,
    load_facts_bulk,
    load_facts_many,
    load_sender,
)
from proxy.store.inbound import (
    InboundRecord,
    claim_inbound,
    finish_inbound,
    inbound_reply,
    object_by_voice,
    start_by_sms,
    stop_by_sms,
)
from proxy.store.registry import (
    LIFT_HOW,
    ConsentIn,
    ObjectionIn,
    RelationshipIn,
    SubjectIn,
    content_hash,
    create_consent,
    create_objection,
    create_organisation,
    create_relationship,
    create_sender,
    get_organisation,
    get_sender,
    lift_objection,
    list_consents,
    list_objections,
    list_organisations,
    list_senders,
    update_organisation,
    withdraw_consent,
)
from proxy.store.relays import (
    ContactOutcome,
    RelayTarget,
    add_relay_targets,
    call_decision,
    get_relay_target,
    record_contact_outcome,
)
from proxy.store.rows import decision_json
from proxy.store.subjects import (
    erase_subject,
    evidence_report,
    subject_report,
    upsert_subject,
)

__all__ = [
    "CLIENT_ID",
    "LIFT_HOW",
    "WRITE_SQL",
    "_BULK_SETTINGS",  # named in the README; the fact query's plan is explained there
    "_FACTS_SQL",  # bench/store_size.py explains its plan
    "ChainReport",
    "Client",
    "ConsentIn",
    "ContactOutcome",
    "DecisionRecord",
    "DialClaim",
    "DialClaimLost",
    "IdempotencyClaim",
    "InboundRecord",
    "ObjectionIn",
    "RelationshipIn",
    "RelayTarget",
    "RequestAlreadyUsed",
    "Reversal",
    "ReversalWhy",
    "StoredCheckpoint",
    "StoredResponse",
    "SubjectIn",
    "add_relay_targets",
    "call_decision",
    "chain_head",
    "claim_inbound",
    "complete_idempotent",
    "content_hash",
    "create_client",
    "create_consent",
    "create_objection",
    "create_organisation",
    "create_relationship",
    "create_sender",
    "decision_json",
    "erase_subject",
    "evidence_report",
    "facts_from_bulk",
    "fetch_facts_bulk",
    "find_idempotent",
    "finish_inbound",
    "get_client",
    "get_organisation",
    "get_relay_target",
    "get_sender",
    "inbound_reply",
    "insert_checkpoint",
    "latest_checkpoint",
    "lift_objection",
    "list_clients",
    "list_consents",
    "list_decisions",
    "list_events",
    "list_objections",
    "list_organisations",
    "list_senders",
    "load_facts",
    "load_facts_bulk",
    "load_facts_many",
    "load_sender",
    "object_by_voice",
    "outcome_args",
    "owned_sids",
    "prune",
    "record_args",
    "record_contact_outcome",
    "record_decision",
    "record_event",
    "relay_client",
    "reverse_consumption",
    "rotate_client",
    "set_client_enabled",
    "start_by_sms",
    "stop_by_sms",
    "subject_report",
    "update_organisation",
    "upsert_subject",
    "verify_chain",
    "withdraw_consent",
    "write_batch",
]
