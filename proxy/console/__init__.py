"""The compliance officer's web console under /console/: server-rendered pages (jinja2, a little
htmx, everything served by the proxy), in English and Dutch, for console users with a role
(viewer, officer, admin). See README, "Console"."""

from proxy.console.site import mount

__all__ = ["mount"]
