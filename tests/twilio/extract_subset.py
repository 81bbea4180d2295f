"""Regenerate `twilio_api_v2010_subset.json` from Twilio's full OpenAPI document.

The tests and proxy/fronts/twilio/fields.py need only the endpoints consent-proxy serves and the
schemas they reference; shipping that subset (MIT licence, see LICENSE beside this file) lets
a fresh clone run the suite alone.

    python tests/twilio/extract_subset.py ../shared/reference/twilio/twilio_api_v2010.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ACCOUNT = "/2010-04-01/Accounts/{AccountSid}/"
# The creates and everything consent-proxy passes through (proxy/fronts/twilio/routes.py): the
# calls, messages and recordings of a client and the documented resources below them that
# can be read, updated or deleted. Paths below a call or message that only create something
# (Feedback, Payments, Siprec, Streams, Transcriptions, UserDefinedMessages and
# UserDefinedMessageSubscriptions lists) are left out: they are not passed through.
PATHS = tuple(ACCOUNT + tail for tail in (
    "Calls.json",
    "Calls/{Sid}.json",
    "Calls/{CallSid}/Events.json",
    "Calls/{CallSid}/Notifications.json",
    "Calls/{CallSid}/Notifications/{Sid}.json",
    "Calls/{CallSid}/Payments/{Sid}.json",
    "Calls/{CallSid}/Recordings.json",
    "Calls/{CallSid}/Recordings/{Sid}.json",
    "Calls/{CallSid}/Siprec/{Sid}.json",
    "Calls/{CallSid}/Streams/{Sid}.json",
    "Calls/{CallSid}/Transcriptions/{Sid}.json",
    "Calls/{CallSid}/UserDefinedMessageSubscriptions/{Sid}.json",
    "Messages.json",
    "Messages/{Sid}.json",
    "Messages/{MessageSid}/Media.json",
    "Messages/{MessageSid}/Media/{Sid}.json",
    "Recordings.json",
    "Recordings/{Sid}.json",
    "Recordings/{RecordingSid}/Transcriptions.json",
    "Recordings/{RecordingSid}/Transcriptions/{Sid}.json",
    "Recordings/{ReferenceSid}/AddOnResults.json",
    "Recordings/{ReferenceSid}/AddOnResults/{Sid}.json",
    "Recordings/{ReferenceSid}/AddOnResults/{AddOnResultSid}/Payloads.json",
    "Recordings/{ReferenceSid}/AddOnResults/{AddOnResultSid}/Payloads/{Sid}.json",
    "Recordings/{ReferenceSid}/AddOnResults/{AddOnResultSid}/Payloads/{PayloadSid}/Data.json",
))
OUT = Path(__file__).with_name("twilio_api_v2010_subset.json")


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def subset(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: spec[k] for k in ("openapi", "info") if k in spec}
    out["paths"] = {p: spec["paths"][p] for p in PATHS}
    components: dict[str, dict[str, Any]] = {}
    todo = _refs(out["paths"])
    seen: set[str] = set()
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, section, kind, name = ref.split("/", 3)
        assert section == "components", ref
        node = spec["components"][kind][name]
        components.setdefault(kind, {})[name] = node
        todo |= _refs(node)
    out["components"] = components
    return out


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text("utf-8"))
    OUT.write_text(json.dumps(subset(spec), indent=1, sort_keys=True) + "\n", "utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
