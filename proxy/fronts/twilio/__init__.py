"""The Twilio front: the Twilio REST API as the official SDKs speak it, and Twilio's webhooks.

- `front.py`: the gated creates of calls and messages (authenticate, validate, then the gate's
  steps), `passthrough.py`: what a dialer reads and updates of its own calls, messages and
  recordings; `routes.py` and `fields.py` (generated): which paths and fields are served;
  `messages.py`: Messages fields that change what the gate can promise;
- `twiml.py`, `dials.py`, `relays.py`: a call's TwiML taken apart, its destinations decided,
  and the URLs Twilio requests relayed through the proxy;
- `webhooks.py`: STOP/START/HELP replies and objections in a call (N11, N12);
- `upstream.py`: Twilio itself, or the sandbox; `errors.py`: Twilio's error shape;
- `mount.py`: how the app mounts it (`FRONT`); `keys.py`: its own app keys.
"""
