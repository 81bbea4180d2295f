"""The Telnyx front: the Telnyx API v2 as the official SDK speaks it, and Telnyx's webhooks.

- `front.py`: the gated creates, `POST /v2/messages` and `POST /v2/calls` (authenticate,
  validate, then the gate's steps); `fields.py`: their bodies read and validated as Telnyx
  does, with the fields that would bypass the decision refused;
- `passthrough.py`: reads of the client's own messages and calls, a hangup of its own call;
  every other way to send refused, everything else 404;
- `upstream.py`: Telnyx itself, or the sandbox; `errors.py`: Telnyx's error shape;
- `settings.py`: TELNYX_* configuration; `mount.py`: how the app mounts it (`FRONT`);
  `keys.py`: its own app keys.
"""
