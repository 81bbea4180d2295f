"""Dial-time decisions for dialers that place calls themselves and ask the gate first (no
forwarding): `POST /dial/v1/decisions` for SIP dialers (`api.py`) and FastAGI for Asterisk
(`fastagi.py`), both deciding through `decisions.py`."""
