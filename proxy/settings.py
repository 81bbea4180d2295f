"""Environment + TOML -> one frozen Settings object, validated at start-up.

Environment variable names and TOML keys are public contracts (README, "Configuration").
A bad value stops start-up with a `ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = Path("config/consent-proxy.toml")
DEFAULT_SPOOL_DIR = Path(".data/spool")
_TIME_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_TIME = re.compile(r"^(\d{2}):(\d{2})$")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: dt.time
    end: dt.time


@dataclass(frozen=True, slots=True)
class CallingHours:
    """N13: when live calls may be made, in Europe/Amsterdam local time. `None` means closed."""

    weekday: TimeRange | None = TimeRange(dt.time(9, 0), dt.time(22, 0))
    saturday: TimeRange | None = TimeRange(dt.time(10, 0), dt.time(16, 0))
    sunday: TimeRange | None = None
    holiday: TimeRange | None = None
    short_day_end: dt.time = dt.time(18, 30)
    closed_dates: frozenset[dt.date] = frozenset()


# N12: the reply keywords. Dutch (STOP, UIT are the established ones; also STOPP, AFMELDEN,
# UITSCHRIJVEN, STOPPEN and the phrases people write instead: NIET MEER BELLEN, NIET MEER
# SMS'EN, GEEN SMS) and the English set Twilio and carriers use. Matched case-, accent- and
# punctuation-insensitively, leading a short message (proxy/policy/optout.py). A keyword may
# be a phrase of several words; apostrophes are dropped as in messages ("sms'en" = "smsen").
DEFAULT_STOP_WORDS: tuple[str, ...] = (
    "stop", "stopp", "uit", "afmelden", "uitschrijven", "stoppen",
    "niet meer bellen", "niet meer smsen", "geen sms",
    "stopall", "unsubscribe", "cancel", "end", "quit", "optout", "revoke",
)
DEFAULT_START_WORDS: tuple[str, ...] = ("start", "aanmelden", "unstop")
DEFAULT_HELP_WORDS: tuple[str, ...] = ("help", "info")
# Words that may follow a keyword without turning the message into an ordinary sentence:
# politeness ("stop aub", "afmelden graag", "dank u wel"), "all" ("stop alles", "stop alle
# berichten"), what is being stopped ("stop sms", "stop met bellen", "stop texting me") and
# "meer" ("geen sms meer").
# Keywords need not be listed: one may always follow a keyword of the same kind ("stop stop").
DEFAULT_FOLLOWER_WORDS: tuple[str, ...] = (
    "aub", "a", "u", "b", "alstublieft", "alsjeblieft", "asjeblieft", "graag", "please", "pls",
    "plz", "thanks", "thank", "you", "thx", "bedankt", "dank", "dankje", "dankjewel",
    "danku", "je", "wel", "svp", "nu", "now", "direct", "meteen", "alles", "alle", "all",
    "allemaal", "everything", "me", "mij", "ons", "hoor", "dan", "ff", "even", "met", "sms",
    "smsjes", "smsen", "berichten", "bericht", "messages", "texts", "texting", "bellen",
    "calls", "calling", "meer",
)


@dataclass(frozen=True, slots=True)
class OptOutKeywords:
    """N12 keyword sets, already normalised (casefolded, accents stripped)."""

    stop: frozenset[str] = frozenset(DEFAULT_STOP_WORDS)
    start: frozenset[str] = frozenset(DEFAULT_START_WORDS)
    help: frozenset[str] = frozenset(DEFAULT_HELP_WORDS)
    followers: frozenset[str] = frozenset(DEFAULT_FOLLOWER_WORDS)
    max_words: int = 6  # longer messages are sentences, not keyword replies


@dataclass(frozen=True, slots=True)
class OptOutSettings:
    # "organisation": a STOP by SMS objects to every channel of that organisation (someone who
    # texts STOP does not want the call either); "channel": to SMS only.
    scope: str = "organisation"
    keywords: OptOutKeywords = field(default_factory=OptOutKeywords)
    organisations: Mapping[str, OptOutKeywords] = field(default_factory=dict)

    def for_organisation(self, organisation_id: str) -> OptOutKeywords:
        return self.organisations.get(organisation_id, self.keywords)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Who may connect to the FastAGI listener unless `fastagi.allow_peers` says otherwise.
LOOPBACK_PEERS: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),
                                       ipaddress.ip_network("::1/128"))
_CLIENT_ID = re.compile(r"AC[0-9a-f]{32}")
_LISTEN = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})\Z")


@dataclass(frozen=True, slots=True)
class FastAgiSettings:
    """The FastAGI listener (proxy/dial/fastagi.py): Asterisk asks at dial time over TCP.
    FastAGI has no credentials: whoever may connect (`allow_peers`) decides as `client`, or
    as one of `clients` named in the dialplan."""

    listen: tuple[str, int] | None = None  # (host, port); None: no listener
    client: str | None = None  # the client a request decides as unless it names another
    clients: tuple[str, ...] = ()  # further clients a `client=` argument may name
    allow_peers: tuple[Network, ...] = LOOPBACK_PEERS
    # The header as a whole, and each reply to a command, must arrive within this; a
    # stalled client cannot hold a session (and a database claim) open.
    read_timeout_seconds: float = 5.0
    max_header_bytes: int = 8192
    max_header_lines: int = 64
    max_sessions: int = 64


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """Everything the decision engine may be configured with (the TOML file)."""

    calling_hours: CallingHours = field(default_factory=CallingHours)
    # N4: "consent_only" or "deny" for destinations outside +31.
    other_destinations: str = "consent_only"
    # N8 (open point): do petition signers count as charity relations?
    petition_signers_are_relations: bool = False
    # N9: a published number is no basis for natural persons since 2021; an operator may
    # switch it on at its own risk (warned at start-up).
    published_number_basis: bool = False
    upstream_timeout_seconds: float = 10.0
    max_body_bytes: int = 1024 * 1024
    # A request body must have arrived completely within this time (else 408): slow clients
    # cannot hold a worker's connection and memory open indefinitely.
    body_timeout_seconds: float = 30.0
    optout: OptOutSettings = field(default_factory=OptOutSettings)
    relay_timeout_seconds: float = 5.0
    retention_months: int = 24  # decision rows older than this are removed by `prune`
    # A call's TwiML may reach destinations the gate cannot see: a SIP URI (`<Sip>`), or a
    # TwiML application (`ApplicationSid`, `<Application>`). Refused unless switched on.
    allow_sip: bool = False
    allow_application_sid: bool = False
    # The proxy requests the dialer's TwiML and callback URLs from where it runs: when set, only
    # these hosts ("dialer.example.com", or "*.example.com" for its subdomains) may be named,
    # so a dialer cannot point it at addresses inside the network. Empty: any host.
    relay_hosts: tuple[str, ...] = ()
    fastagi: FastAgiSettings = field(default_factory=FastAgiSettings)


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None
    host: str
    port: int
    config_path: Path
    admin_token: str | None
    twilio_api_base: str
    twilio_account_sid: str | None
    twilio_auth_token: str | None
    public_url: str
    proxy_secret: str | None
    log_level: str
    rules: RuleSettings
    # Where STOP replies wait while the database cannot be written (proxy/optout_spool.py).
    optout_spool_dir: Path = DEFAULT_SPOOL_DIR
    # What needs a session of its own (the LISTEN for client changes), and the command line:
    # PostgreSQL itself when DATABASE_URL is a transaction pooler. None: DATABASE_URL.
    database_url_direct: str | None = None
    # asyncpg's prepared statements per connection; 0 behind a transaction pooler.
    statement_cache_size: int = 100
    # SIGTERM: /readyz answers 503 this long, requests still served, before the listener
    # closes (a balancer's health check takes the gate out first).
    drain_seconds: float = 0.0
    # The environment the settings were read from: a front reads its own provider's keys
    # from it when it is mounted (its upstream credentials, its webhook secrets), so adding
    # a provider adds no field here. Never logged or shown.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def session_database_url(self) -> str | None:
        return self.database_url_direct or self.database_url

    @property
    def sandbox(self) -> bool:
        """No upstream Twilio credentials: allowed requests are answered by the built-in sandbox."""
        return not self.twilio_account_sid


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    host = env.get("PROXY_HOST", "127.0.0.1")
    port = _int(env.get("PROXY_PORT", "8080"), "PROXY_PORT", low=1, high=65535)
    config_path = Path(env.get("PROXY_CONFIG", str(DEFAULT_CONFIG_PATH)))
    log_level = env.get("LOG_LEVEL", "info").lower()
    if log_level not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"LOG_LEVEL: expected debug|info|warning|error, got {log_level!r}")
    account_sid = env.get("TWILIO_ACCOUNT_SID") or None
    auth_token = env.get("TWILIO_AUTH_TOKEN") or None
    if account_sid and not auth_token:
        raise ConfigError("TWILIO_AUTH_TOKEN: required when TWILIO_ACCOUNT_SID is set")
    if account_sid and not re.fullmatch(r"AC[0-9a-fA-F]{32}", account_sid):
        raise ConfigError("TWILIO_ACCOUNT_SID: expected AC followed by 32 hex digits")
    return Settings(
        database_url=env.get("DATABASE_URL") or None,
        host=host,
        port=port,
        config_path=config_path,
        admin_token=env.get("ADMIN_TOKEN") or None,
        twilio_api_base=env.get("TWILIO_API_BASE", "https://api.twilio.com").rstrip("/"),
        twilio_account_sid=account_sid,
        twilio_auth_token=auth_token,
        public_url=(env.get("PUBLIC_URL") or f"http://{host}:{port}").rstrip("/"),
        proxy_secret=env.get("PROXY_SECRET") or None,
        log_level=log_level,
        rules=load_rules(config_path) if config_path.exists() else _missing(config_path, env),
        optout_spool_dir=Path(env.get("OPTOUT_SPOOL_DIR") or DEFAULT_SPOOL_DIR),
        database_url_direct=env.get("DATABASE_URL_DIRECT") or None,
        statement_cache_size=_int(env.get("DATABASE_STATEMENT_CACHE_SIZE", "100"),
                                  "DATABASE_STATEMENT_CACHE_SIZE", low=0, high=100_000),
        drain_seconds=_int(env.get("PROXY_DRAIN_SECONDS", "0"), "PROXY_DRAIN_SECONDS",
                           low=0, high=3600),
        env=dict(env),
    )


def _missing(path: Path, env: Mapping[str, str]) -> RuleSettings:
    if "PROXY_CONFIG" in env:
        raise ConfigError(f"PROXY_CONFIG: file {str(path)!r} does not exist")
    return RuleSettings()


def load_rules(path: Path) -> RuleSettings:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_rules(data)


SECTIONS: dict[str, set[str]] = {
    "calling_hours": {"weekday", "saturday", "sunday", "holiday", "short_day_end", "closed_dates"},
    "destinations": {"other"},
    "relations": {"petition_signers"},
    "bases": {"published_number"},
    "upstream": {"timeout_seconds"},
    "limits": {"max_body_bytes", "body_timeout_seconds"},
    "optout": {"scope", "stop", "start", "help", "followers", "max_words", "organisations"},
    "webhooks": {"relay_timeout_seconds"},
    "retention": {"decisions_months"},
    "twilio": {"allow_sip", "allow_application_sid", "relay_hosts"},
    "fastagi": {"listen", "client", "clients", "allow_peers", "read_timeout_seconds",
                "max_header_bytes", "max_header_lines", "max_sessions"},
}
_KEYWORD_LISTS = ("stop", "start", "help", "followers")


def parse_rules(data: Mapping[str, Any]) -> RuleSettings:
    for section, body in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{section}: unknown section")
        if not isinstance(body, dict):
            raise ConfigError(f"{section}: expected a table")
        for key in body:
            if key not in SECTIONS[section]:
                raise ConfigError(f"{section}.{key}: unknown key")
    defaults = RuleSettings()
    hours = data.get("calling_hours", {})
    dh = defaults.calling_hours
    calling_hours = CallingHours(
        weekday=_range(hours, "weekday", dh.weekday),
        saturday=_range(hours, "saturday", dh.saturday),
        sunday=_range(hours, "sunday", dh.sunday),
        holiday=_range(hours, "holiday", dh.holiday),
        short_day_end=_time(hours, "short_day_end", dh.short_day_end),
        closed_dates=_dates(hours, "closed_dates"),
    )
    other = data.get("destinations", {}).get("other", defaults.other_destinations)
    if other not in {"consent_only", "deny"}:
        raise ConfigError(f"destinations.other: expected 'consent_only' or 'deny', got {other!r}")
    petition = data.get("relations", {}).get("petition_signers", False)
    if not isinstance(petition, bool):
        raise ConfigError("relations.petition_signers: expected true or false")
    published = data.get("bases", {}).get("published_number", False)
    if not isinstance(published, bool):
        raise ConfigError("bases.published_number: expected true or false")
    timeout = data.get("upstream", {}).get("timeout_seconds", defaults.upstream_timeout_seconds)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
        raise ConfigError("upstream.timeout_seconds: expected a number of seconds in (0, 300]")
    max_body = data.get("limits", {}).get("max_body_bytes", defaults.max_body_bytes)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1024:
        raise ConfigError("limits.max_body_bytes: expected an integer >= 1024")
    body_timeout = data.get("limits", {}).get("body_timeout_seconds",
                                              defaults.body_timeout_seconds)
    if (isinstance(body_timeout, bool) or not isinstance(body_timeout, int | float)
            or not 0 < body_timeout <= 300):
        raise ConfigError("limits.body_timeout_seconds: expected a number of seconds in (0, 300]")
    relay = data.get("webhooks", {}).get("relay_timeout_seconds", defaults.relay_timeout_seconds)
    if isinstance(relay, bool) or not isinstance(relay, int | float) or not 0 < relay <= 60:
        raise ConfigError("webhooks.relay_timeout_seconds: expected a number of seconds in "
                          "(0, 60]")
    months = data.get("retention", {}).get("decisions_months", defaults.retention_months)
    if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= 240:
        raise ConfigError("retention.decisions_months: expected an integer from 1 to 240")
    twilio = data.get("twilio", {})
    allow = {key: twilio.get(key, False) for key in ("allow_sip", "allow_application_sid")}
    for key, value in sorted(allow.items()):
        if not isinstance(value, bool):
            raise ConfigError(f"twilio.{key}: expected true or false")
    return RuleSettings(
        calling_hours=calling_hours,
        other_destinations=other,
        petition_signers_are_relations=petition,
        published_number_basis=published,
        upstream_timeout_seconds=float(timeout),
        max_body_bytes=max_body,
        body_timeout_seconds=float(body_timeout),
        optout=_optout(data.get("optout", {})),
        relay_timeout_seconds=float(relay),
        retention_months=months,
        allow_sip=allow["allow_sip"],
        allow_application_sid=allow["allow_application_sid"],
        relay_hosts=_hosts(twilio.get("relay_hosts", []), "twilio.relay_hosts"),
        fastagi=_fastagi(data.get("fastagi", {})),
    )


def _fastagi(section: Mapping[str, Any]) -> FastAgiSettings:
    defaults = FastAgiSettings()
    listen = _listen(section["listen"]) if "listen" in section else None
    client = section.get("client")
    if client is not None and (not isinstance(client, str) or not _CLIENT_ID.fullmatch(client)):
        raise ConfigError("fastagi.client: expected a client's id (AC followed by 32 hex "
                          "digits)")
    clients = section.get("clients", [])
    if not isinstance(clients, list) or not all(
            isinstance(c, str) and _CLIENT_ID.fullmatch(c) for c in clients):
        raise ConfigError("fastagi.clients: expected a list of client ids (AC followed by 32 "
                          "hex digits)")
    if listen is not None and client is None and not clients:
        raise ConfigError("fastagi.client: required when fastagi.listen is set (or "
                          "fastagi.clients, for dialplans that name their client)")
    peers = defaults.allow_peers
    if "allow_peers" in section:
        peers = _networks(section["allow_peers"], "fastagi.allow_peers")
    elif listen is not None and not _is_loopback(listen[0]):
        # FastAGI has no credentials: who can connect decides as the client.
        raise ConfigError("fastagi.allow_peers: required when fastagi.listen is not a "
                          "loopback address (name the PBXs that may connect)")
    timeout = section.get("read_timeout_seconds", defaults.read_timeout_seconds)
    if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or not 0 < timeout <= 60):
        raise ConfigError("fastagi.read_timeout_seconds: expected a number of seconds in "
                          "(0, 60]")
    limits = {key: _bounded_int(section, key, getattr(defaults, key), low, high)
              for key, low, high in (("max_header_bytes", 1024, 1024 * 1024),
                                     ("max_header_lines", 8, 1024),
                                     ("max_sessions", 1, 100_000))}
    return FastAgiSettings(listen=listen, client=client,
                           clients=tuple(dict.fromkeys(clients)), allow_peers=peers,
                           read_timeout_seconds=float(timeout), **limits)


def _listen(value: Any) -> tuple[str, int]:
    match = _LISTEN.match(value) if isinstance(value, str) else None
    port = int(match.group("port")) if match else -1
    if match is None or not 0 <= port <= 65535:
        raise ConfigError("fastagi.listen: expected \"host:port\" (\"127.0.0.1:4573\", "
                          f"\"[::1]:4573\"), got {value!r}")
    host = match.group("v6") or match.group("host")
    if match.group("v6"):
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ConfigError(f"fastagi.listen: {host!r} is not an IPv6 address") from exc
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _networks(value: Any, name: str) -> tuple[Network, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}: expected a non-empty list of addresses or networks "
                          "(\"192.0.2.7\", \"10.1.0.0/16\")")
    networks = []
    for text in value:
        try:
            networks.append(ipaddress.ip_network(text.strip()))
        except ValueError as exc:
            raise ConfigError(f"{name}: {text!r} is not an address or network (host bits "
                              "must be zero: \"10.1.0.0/16\")") from exc
    return tuple(dict.fromkeys(networks))


def _bounded_int(section: Mapping[str, Any], key: str, default: int, low: int,
                 high: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"fastagi.{key}: expected an integer from {low} to {high}")
    return value


_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def _hosts(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        raise ConfigError(f"{name}: expected a list of host names")
    hosts = tuple(dict.fromkeys(h.strip().lower() for h in value))
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise ConfigError(f"{name}: {host!r} is not a host name (or *.domain)")
    return hosts


def normalise_word(word: str) -> str:
    """Casefold and strip accents: keywords and messages are compared in this form."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold().strip()


# Deleted, not turned into a space, in messages and configured keywords alike: "sms'jes",
# "sms'en", "don't" stay one word.
APOSTROPHES = dict.fromkeys(map(ord, "'\u2018\u2019\u02bc`"), None)


def _words(value: Any, name: str, *, phrases: bool) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
        raise ConfigError(f"{name}: expected a list of words")
    words = frozenset(" ".join(normalise_word(w).translate(APOSTROPHES).split()) for w in value)
    if not phrases and any(" " in w for w in words):
        raise ConfigError(f"{name}: one word per entry")
    if any(not part.replace("-", "").isalnum() for w in words for part in w.split(" ")):
        raise ConfigError(f"{name}: words are letters and digits only")
    return words


def _optout(section: Mapping[str, Any]) -> OptOutSettings:
    scope = section.get("scope", "organisation")
    if scope not in {"organisation", "channel"}:
        raise ConfigError(f"optout.scope: expected 'organisation' or 'channel', got {scope!r}")
    max_words = section.get("max_words", OptOutKeywords().max_words)
    if isinstance(max_words, bool) or not isinstance(max_words, int) or not 1 <= max_words <= 20:
        raise ConfigError("optout.max_words: expected an integer from 1 to 20")
    lists = {k: _words(section[k], f"optout.{k}", phrases=k != "followers")
             for k in _KEYWORD_LISTS if k in section}
    base = OptOutKeywords(max_words=max_words, **lists)
    organisations: dict[str, OptOutKeywords] = {}
    per_org = section.get("organisations", {})
    if not isinstance(per_org, dict):
        raise ConfigError("optout.organisations: expected a table of organisations")
    for org_id, extra in per_org.items():
        name = f"optout.organisations.{org_id}"
        if not isinstance(extra, dict):
            raise ConfigError(f"{name}: expected a table")
        for key in extra:
            if key not in _KEYWORD_LISTS:
                raise ConfigError(f"{name}.{key}: unknown key")
        # Per organisation, words are added to the shared lists, never taken away from them.
        organisations[org_id] = dataclasses.replace(base, **{
            k: getattr(base, k) | _words(extra[k], f"{name}.{k}", phrases=k != "followers")
            for k in extra})
    return OptOutSettings(scope=scope, keywords=base, organisations=organisations)


def _range(section: Mapping[str, Any], key: str, default: TimeRange | None) -> TimeRange | None:
    name = f"calling_hours.{key}"
    if key not in section:
        return default
    value = section[key]
    if value == "closed":
        return None
    match = _TIME_RANGE.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f"{name}: expected \"closed\" or \"HH:MM-HH:MM\", got {value!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        start, end = dt.time(h1, m1), dt.time(h2, m2)
    except ValueError as exc:
        raise ConfigError(f"{name}: {value!r} is not a valid time range") from exc
    if start >= end:
        raise ConfigError(f"{name}: start {value[:5]} must be before end {value[6:]}")
    return TimeRange(start, end)


def _time(section: Mapping[str, Any], key: str, default: dt.time) -> dt.time:
    name = f"calling_hours.{key}"
    if key not in section:
        return default
    value = section[key]
    match = _TIME.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f"{name}: expected \"HH:MM\", got {value!r}")
    try:
        return dt.time(int(match.group(1)), int(match.group(2)))
    except ValueError as exc:
        raise ConfigError(f"{name}: {value!r} is not a valid time") from exc


def _dates(section: Mapping[str, Any], key: str) -> frozenset[dt.date]:
    name = f"calling_hours.{key}"
    values = section.get(key, [])
    if not isinstance(values, list):
        raise ConfigError(f"{name}: expected a list of \"YYYY-MM-DD\" dates")
    out: set[dt.date] = set()
    for value in values:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            out.add(value)
            continue
        try:
            out.add(dt.date.fromisoformat(value))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}: {value!r} is not a \"YYYY-MM-DD\" date") from exc
    return frozenset(out)


def _int(value: str, name: str, *, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from exc
    if not low <= number <= high:
        raise ConfigError(f"{name}: expected {low}..{high}, got {number}")
    return number
