"""The ways in, one folder each (the dial-time API lives in proxy/dial/). Each turns its wire
format into the gate's values and back, renders its own errors and mounts its own routes
(proxy/front.py); the app factory mounts every front listed here. A new provider is a new
folder and a line below; the gate does not change."""

from proxy.dial.front import FRONT as DIAL
from proxy.front import Front
from proxy.fronts.cm.mount import FRONT as CM
from proxy.fronts.telnyx.mount import FRONT as TELNYX
from proxy.fronts.twilio.mount import FRONT as TWILIO
from proxy.fronts.vonage.mount import FRONT as VONAGE

FRONTS: tuple[Front, ...] = (TWILIO, TELNYX, CM, VONAGE, DIAL)
