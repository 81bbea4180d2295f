"""consent-proxy: a consent gate between dialers and telephony/SMS providers."""

__version__ = "0.1.0"
