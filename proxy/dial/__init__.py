"""Dial-time decisions: `POST /dial/v1/decisions` for SIP dialers, which place calls
themselves and ask the gate first (no forwarding). Routes and handlers in `api.py`."""
