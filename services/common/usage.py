"""Mistakes on the command line, told in one line before anything starts.

A flag's value that cannot work (a filter that does not compile, a state
directory that is a file, missing bus credentials, a command that needs root)
is found here, before a service binds a port, creates a directory or starts a
child, and reported as ``knd <command>: what is wrong; what to do``: exit
status 2 for a usage error, 1 for a refusal (the command is right but this
machine or user cannot run it yet).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from schemas.text import one_line, q


class UsageError(ValueError):
    """The command line (or a ``KND_*`` variable) is wrong: exit status 2."""

    status = 2


class Refused(Exception):
    """The command line is right but cannot run here yet (privileges, a missing file that
    another command creates): exit status 1."""

    status = 1


class Parser(argparse.ArgumentParser):
    """``knd``'s parsers: no abbreviated flags (``--standalon`` must not silently mean
    ``--standalone``), and a usage error is one line naming the command it is about."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.commands: Mapping[str, argparse.ArgumentParser] = {}
        """Sub-command name -> its parser (set by the CLI on the top-level parser)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {one_line(message, 1000)} (see {self.prog} --help)\n")


TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def parse_flag(variable: str, raw: str) -> bool:
    """The boolean variable ``variable`` set to ``raw``; a value that is neither yes nor
    no is a usage error (a typo must not turn a feature off silently)."""
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise UsageError(f"{variable}={q(raw)}: expected one of {', '.join(TRUE)} or "
                     f"{', '.join(v for v in FALSE if v)} (or unset)")


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def duration(text: str) -> float:
    """``type=`` of an interval: seconds (``60``, ``0.5``) or a Go duration as DRANET's
    flags take them (``1m``, ``1m30s``, ``500ms``)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise argparse.ArgumentTypeError(
                f"{q(text)}: expected seconds (60) or a duration (90s, 1m, 500ms)") from None
        value = sum(float(n) * _UNITS[u] for n, u in parts)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{q(text)}: must not be negative")
    return value


def attach_timeout(text: str) -> float:
    """``type=`` of --device-attach-timeout: a duration from 0 to 60 seconds (DRANET's range)."""
    value = duration(text)
    if value > 60:
        raise argparse.ArgumentTypeError(f"{q(text)}: must be between 0 and 60 seconds")
    return value


def hook_shell(text: str) -> str:
    """``type=`` of --hook-shell: an absolute path, or empty for no hook."""
    if text and not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"{q(text)}: expected an absolute path (or empty "
                                         "for no hook)")
    return text


def timeout(text: str) -> float:
    """``type=`` of how long one request may take: seconds, more than 0, at most 600."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"{q(text)}: expected seconds, more than 0, at most 600")
    return value


def port(text: str) -> int:
    """``type=`` of a TCP port (0: any free one)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{q(text)}: expected a port, 0 to 65535")
    return value


def plugin_index(text: str) -> str:
    """``type=`` of ``--nri-index``: the two digits NRI orders plugins by."""
    if not re.fullmatch(r"\d\d", text):
        raise argparse.ArgumentTypeError(f"{q(text)}: expected two digits, 00 to 99")
    return text


def address(text: str) -> str:
    """``type=`` of ``--metrics-address``: ``host:port`` with an IP address (or
    ``localhost``, or no host for every interface), or ``off``."""
    from services.common.address import parse_address

    try:
        where = parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if where is not None and where[0] not in ("", "localhost"):
        try:
            ipaddress.ip_address(where[0])
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{q(text)}: expected host:port with an IP address (127.0.0.1:9501, "
                "[::1]:9501, :9501 for every interface) or off") from None
    return text


# ---- checks before a command starts ----------------------------------------------------------


def _path(path: Path) -> str:
    return q(str(path), 300)  # paths run longer than names, and the end is the telling part


def check_filter(expression: str | None, flag: str = "--filter") -> None:
    """A device expression (``--filter``, ``--shared-devices``) that compiles, or one line."""
    if not expression:
        return
    # the compiler alone: the whole filter would load discovery's metrics in `knd up`
    from services.common.celexpr import CelError, compile_checked

    try:
        compile_checked(expression, flag)
    except CelError as exc:
        raise UsageError(f"{flag} {q(expression)} is not a valid CEL expression: "
                         f"{_cel_reason(str(exc))}; e.g. 'attributes[\"knd.dev/type\"] != "
                         "\"veth\"' or 'true'") from None


def _cel_reason(message: str) -> str:
    """The compiler's most telling line (``at 1:12: Syntax error: ...``), without the
    source excerpt and caret lines it adds for a terminal."""
    found = re.findall(r"ERROR: <input>:(\d+:\d+): ([^\n]*)", message)
    at, what = next(((a, w) for a, w in found if "Syntax error" in w),
                    found[0] if found else ("", message))
    line = f"at {at}: {what}" if at else what
    return one_line(line.removeprefix("--filter: "), 200)


def check_state_dir(path: Path, create: bool) -> None:
    """A state directory that is something else is a usage error; one that ``create``
    would have to make where this user cannot write is a refusal."""
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise UsageError(f"--state-dir {_path(path)} exists and is not a directory; "
                             "name a directory (it is created if missing)")
        if create and not os.access(path, os.W_OK | os.X_OK):
            raise Refused(f"--state-dir {_path(path)} is not writable by uid {os.geteuid()}; "
                          "run as root or pass a --state-dir you own")
        return
    if not create:
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise Refused(f"cannot create --state-dir {_path(path)}: {_path(parent)} is not "
                      f"writable by uid {os.geteuid()}; run as root or pass a --state-dir you "
                      "can create")


def check_bus_creds(path: Path) -> None:
    from services.common import auth

    if not path.exists():
        raise Refused(f"no bus credentials at {_path(path)}: `knd up` writes them (the "
                      "DaemonSet's `knd bus-config` does, for separate containers); run the "
                      "service under `knd up`, or point --state-dir or --bus-creds at them")
    try:
        auth.load(path)
    except RuntimeError as exc:
        raise Refused(f"{one_line(str(exc), 500)}; `knd up` or `knd bus-config` rewrites "
                      "them") from None


def check_privileges(command: str, caps: tuple[str, ...]) -> None:
    from services.common.privileges import missing_capabilities

    missing = missing_capabilities(caps)
    if missing:
        raise Refused(f"needs root: it creates network namespaces and moves interfaces, and "
                      f"this process lacks {', '.join(missing)}; run it as root "
                      f"(sudo knd {command})")


def preflight(args: argparse.Namespace) -> None:
    """Everything about ``args`` that can be known wrong before the command starts."""
    check_filter(getattr(args, "filter", None))
    check_filter(getattr(args, "shared_devices", None), "--shared-devices")
    from services import providers

    problem = providers.check(args)
    if problem:
        raise UsageError(problem)
    command = args.command
    once = getattr(args, "once", False)
    if getattr(args, "state_dir", None) is not None:
        check_state_dir(Path(args.state_dir), create=command == "up")
    if command in ("discovery", "publisher", "plumber", "kubelet-gateway") and not once:
        creds = args.bus_creds or Path(args.state_dir) / "bus" / "creds.json"
        check_bus_creds(Path(creds))
    if command == "demo":
        check_privileges(command, ("CAP_NET_ADMIN", "CAP_SYS_ADMIN"))
