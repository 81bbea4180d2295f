"""The CM.com front: CM's Business Messaging JSON API (`POST /v1.0/message`) as the official
SDKs speak it, and CM's inbound-message (MO) webhook.

- `request.py`: the request body read and checked as CM reads it (keys in any case), into
  frozen values; what the gate cannot promise (other channels, binary bodies, a user data
  header) is refused before anything is decided;
- `front.py`: the gated send: every recipient of every `msg` is one contact and one decision;
  only the allowed ones leave, in one upstream request, and the answer is merged so that each
  recipient gets its own status, in order;
- `answers.py`: CM's answer shape, denials and faults in it (`errors.py`: the request-level
  errors and the renderer the app uses on the front's paths);
- `upstream.py`: CM itself, or the sandbox; `settings.py`: its environment keys;
- `webhooks.py`: inbound SMS turned into STOP/START/HELP handling (N11, N12);
- `mount.py`: how the app mounts it (`FRONT`); `keys.py`: its own app keys.
"""
