"""The AGI wire protocol as Asterisk speaks it over FastAGI (res/res_agi.c), with a limit on
everything the gate reads.

Asterisk connects and sends its environment, one `name: value` line each: `agi_network: yes`,
`agi_network_script: <the URL's path after the host>`, then `agi_request`, `agi_channel`, …,
`agi_uniqueid`, `agi_callerid` (`unknown` when there is none), …, and one `agi_arg_N` per
argument of `AGI(url,arg1,arg2,…)`; a blank line ends it. The server then sends commands, a
line each, and Asterisk answers each with a line `200 result=…` (`510`, `511`, or `520` with
the usage on `520-` lines, on errors). When the channel hangs up, Asterisk sends `HANGUP` on
a line of its own (unless the channel's AGISIGHUP is `no`), between answers; SET VARIABLE
still works on the hung-up channel. The session ends when the server closes the connection.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass

_KEY = re.compile(rb"agi_[a-z0-9_]{1,60}")
_ARG = re.compile(r"agi_arg_([1-9][0-9]{0,3})")
_REPLY = re.compile(rb"([0-9]{3})([ -]|\Z)")
# A value goes out inside double quotes; Asterisk's parser (parse_args) takes a backslash as
# an escape. Control characters would end the command line: none are ever sent.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Dropped(Exception):
    """The session cannot go on; `why` names the cause for the log and the metric."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True, slots=True)
class Header:
    """What Asterisk sent first: its `agi_*` variables and the AGI() arguments in order."""

    env: Mapping[str, str]
    args: tuple[str, ...]

    @property
    def script(self) -> str:
        """The URL's path after the host (`decide` for agi://gate:4573/decide)."""
        return self.env.get("agi_network_script", "")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int  # 200: done; 510, 511, 520: refused
    hung_up: bool  # a HANGUP line came before it


async def read_header(reader: asyncio.StreamReader, *, max_bytes: int,
                      max_lines: int) -> Header:
    """The environment, in at most `max_bytes` bytes (the reader's own limit bounds a single
    line to the same) and `max_lines` lines. The caller bounds the time."""
    env: dict[str, str] = {}
    args: dict[int, str] = {}
    size = 0
    try:
        for _ in range(max_lines + 1):
            line = await reader.readline()
            if not line.endswith(b"\n"):
                raise Dropped("closed")
            size += len(line)
            if size > max_bytes:
                raise Dropped("too_large")
            text = line.rstrip(b"\r\n")
            if not text:
                return Header(env, _in_order(args))
            name, value = _variable(text)
            arg = _ARG.fullmatch(name)
            if arg is None:
                if name in env:  # each variable once
                    raise Dropped("malformed")
                env[name] = value
            else:
                index = int(arg.group(1))
                if index in args:
                    raise Dropped("malformed")
                args[index] = value
    except ValueError as exc:  # a line beyond the reader's limit
        raise Dropped("too_large") from exc
    except ConnectionError as exc:
        raise Dropped("closed") from exc
    raise Dropped("too_large")  # more lines than max_lines


def _variable(text: bytes) -> tuple[str, str]:
    key, sep, raw = text.partition(b":")
    if not sep or not _KEY.fullmatch(key) or b"\x00" in raw:
        raise Dropped("malformed")
    raw = raw.removeprefix(b" ")  # "agi_accountcode: " is an empty value
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if key.startswith(b"agi_arg_"):  # what the dialplan asks: it must be read as sent
            raise Dropped("malformed") from exc
        # Asterisk passes the channel's variables as it has them (a caller name in Latin-1
        # from many trunks): read those byte for byte rather than drop the session.
        value = raw.decode("latin-1")
    return key.decode("ascii"), value


def _in_order(args: dict[int, str]) -> tuple[str, ...]:
    if sorted(args) != list(range(1, len(args) + 1)):
        raise Dropped("malformed")  # Asterisk numbers its arguments from 1 without a gap
    return tuple(args[i] for i in range(1, len(args) + 1))


def set_variable(name: str, value: str) -> bytes:
    """`SET VARIABLE name "value"`: Asterisk answers `200 result=1`."""
    text = _CONTROL.sub(" ", value).replace("\\", "\\\\").replace('"', '\\"')
    return f'SET VARIABLE {name} "{text}"\n'.encode()


async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes, *,
                  max_lines: int) -> Reply:
    """Send one command and read Asterisk's answer (in at most `max_lines` lines: HANGUP,
    "100 Trying", a usage text). The caller bounds the time."""
    try:
        writer.write(line)
        await writer.drain()
        return await _reply(reader, max_lines)
    except ValueError as exc:  # a line beyond the reader's limit
        raise Dropped("malformed") from exc
    except ConnectionError as exc:
        raise Dropped("closed") from exc


async def _reply(reader: asyncio.StreamReader, max_lines: int) -> Reply:
    hung_up = False
    continued: bytes | None = None  # the code of a `520-` answer still going on
    for _ in range(max_lines):
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise Dropped("closed")
        text = line.rstrip(b"\r\n")
        if text == b"HANGUP":
            hung_up = True
            continue
        match = _REPLY.match(text)
        if continued is not None:  # the usage text of a 520 answer, up to "520 End …"
            if match is not None and match.group(1) == continued and match.group(2) != b"-":
                return Reply(int(continued), hung_up)
            continue
        if match is None:
            raise Dropped("malformed")
        if match.group(2) == b"-":
            continued = match.group(1)
        elif match.group(1) != b"100":  # "100 Trying…" comes before the real answer
            return Reply(int(match.group(1)), hung_up)
    raise Dropped("malformed")
