"""Asterisk's side of FastAGI, written from the protocol (res/res_agi.c), for the tests.

Asterisk is not packaged for Debian 12, so this plays it: it connects, sends the environment
as `launch_netscript` and `setup_env` do (`agi_network: yes`, `agi_network_script`, the
channel's `agi_*` variables in Asterisk's order, one `agi_arg_N` per argument, a blank line),
then answers every command line as `agi_handle_command` does: the line is split into words
by Asterisk's own rules (`parse_args`: double quotes, backslash escapes), SET VARIABLE with
exactly a name and a value is done and answered `200 result=1`, SET VARIABLE with other
words `520` (with its usage text), anything else `510 Invalid or unknown command`. A hang-up
sends `HANGUP` on a line of its own before the next answer, as `run_agi` does; commands are
still answered after it (SET VARIABLE is allowed on a dead channel). The session ends when the
gate closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

# Every read of the client is bounded, so a broken gate fails a test instead of hanging it.
SAFETY_SECONDS = 10.0
_UNIQUE = itertools.count(1)


def unique_id() -> str:
    """An Asterisk channel's uniqueid: epoch seconds, a dot, a sequence number."""
    return f"1764500000.{next(_UNIQUE)}"


def parse_args(line: str) -> list[str]:
    """res_agi.c parse_args: words split on unquoted, unescaped blanks; double quotes group
    and are dropped; a backslash takes the next character literally."""
    words: list[list[str]] = []
    quoted = escaped = False
    blank = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and blank:
                words.append([])
                blank = False
        elif ch in " \t" and not quoted and not escaped:
            blank = True
        elif ch == "\\" and not escaped:
            escaped = True
            continue
        else:
            if blank:
                words.append([])
                blank = False
            words[-1].append(ch)
        escaped = False
    return ["".join(w) for w in words]


@dataclass
class Session:
    """What the gate did in one AGI session, as the channel saw it."""

    variables: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)  # the raw lines, in order
    refused: list[str] = field(default_factory=list)  # lines answered 510 or 520
    names: list[str] = field(default_factory=list)  # variables in the order they were set


def environment(script: str, args: Sequence[str], *, port: int, callerid: str,
                uniqueid: str) -> list[str]:
    """The header lines, as Asterisk 20 sends them for AGI(agi://host:port/script,args…)."""
    lines = ["agi_network: yes", f"agi_network_script: {script}",
             f"agi_request: agi://127.0.0.1:{port}/{script}",
             "agi_channel: PJSIP/trunk-00000017", "agi_language: nl", "agi_type: PJSIP",
             f"agi_uniqueid: {uniqueid}", "agi_version: 20.5.2", f"agi_callerid: {callerid}",
             "agi_calleridname: Energie BV", "agi_callingpres: 0", "agi_callingani2: 0",
             "agi_callington: 0", "agi_callingtns: 0", "agi_dnid: unknown",
             "agi_rdnis: unknown", "agi_context: outbound", "agi_extension: s",
             "agi_priority: 2", "agi_enhanced: 0.0", "agi_accountcode: ",
             "agi_threadid: 140245112317504"]
    lines += [f"agi_arg_{i}: {arg}" for i, arg in enumerate(args, start=1)]
    return lines


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_by_gate(reader: asyncio.StreamReader) -> bytes:
    """Everything the gate still sends until it closes the connection. A gate that closes
    with bytes of ours unread resets the connection: closed too."""
    try:
        async with asyncio.timeout(SAFETY_SECONDS):
            return await reader.read()
    except ConnectionResetError:
        return b""


def header_bytes(lines: Sequence[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode() + b"\n"


async def run(port: int, script: str, args: Sequence[str], *, callerid: str = "unknown",
              uniqueid: str | None = None, hangup_after: int | None = None,
              answer_after: int | None = None) -> Session:
    """One AGI(agi://127.0.0.1:port/script,args…) with the channel's caller ID and uniqueid;
    see `converse`."""
    reader, writer = await connect(port)
    lines = environment(script, args, port=port, callerid=callerid,
                        uniqueid=uniqueid or unique_id())
    return await converse(reader, writer, header_bytes(lines), hangup_after=hangup_after,
                          answer_after=answer_after)


async def converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, header: bytes,
                   *, hangup_after: int | None = None,
                   answer_after: int | None = None) -> Session:
    """Send the header, then answer commands until the gate closes the connection.
    `hangup_after`: the channel hangs up once that many commands were answered.
    `answer_after`: stop answering after that many (a stalled Asterisk)."""
    session = Session()
    try:
        writer.write(header)
        await writer.drain()
        async with asyncio.timeout(SAFETY_SECONDS):
            while line := await reader.readline():
                text = line.decode().rstrip("\n")
                session.commands.append(text)
                if answer_after is not None and len(session.commands) > answer_after:
                    await reader.read()  # say nothing more; wait for the gate to give up
                    break
                if hangup_after is not None and len(session.commands) == hangup_after + 1:
                    writer.write(b"HANGUP\n")
                writer.write(_answer(text, session))
                await writer.drain()
    except ConnectionResetError:  # the gate closed with bytes of ours unread
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError):
            await writer.wait_closed()
    return session


def _answer(text: str, session: Session) -> bytes:
    words = parse_args(text)
    if [w.lower() for w in words[:2]] != ["set", "variable"]:
        session.refused.append(text)
        return b"510 Invalid or unknown command\n"
    if len(words) != 4:
        session.refused.append(text)
        return (b"520-Invalid command syntax.  Proper usage follows:\n"
                b"Usage: SET VARIABLE <variablename> <value>\n"
                b"520 End of proper usage.\n")
    session.variables[words[2]] = words[3]
    session.names.append(words[2])
    return b"200 result=1\n"
