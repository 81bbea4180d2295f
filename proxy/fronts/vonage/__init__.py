"""The Vonage front: Vonage's SMS API and Voice API as the official SDK speaks them, and its
inbound SMS webhook.

- `messages.py`: `POST /sms/json`, gated (N17 footer, one decision per message);
- `calls.py` and `ncco.py`: `POST /v1/calls` with every number of its NCCO decided, and the
  client's own calls read or hung up; `auth.py`: api_key/api_secret and RS256 JWTs;
  `applications.py`: the clients' Vonage applications (sql/019) and their admin route;
- `webhooks.py`: inbound SMS (STOP/START/HELP), signed by Vonage; `events.py`: a call's
  events through the proxy (a call that reached nobody gives back, N5/N6);
- `upstream.py`: Vonage itself, or the sandbox; `errors.py`: Vonage's error shapes;
- `settings.py`: its environment keys; `wire.py`: reading its bodies and numbers;
- `mount.py`: how the app mounts it (`FRONT`); `keys.py`: its own app keys.
"""
