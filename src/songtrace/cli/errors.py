"""How a command ends: every refusal is one line on stderr and exit code 2, never a traceback.

Exit codes: 0 done; 2 refused (a usage error, bad input raised as `SongtraceError`, a path that
cannot be read or written, an optional extra that is not installed); 130 aborted; 1 with a traceback: a bug. `SONGTRACE_DEBUG=1` shows the
traceback of a refusal too.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

from songtrace.errors import PACKAGES, SongtraceError

EXIT_REFUSED = 2
EXIT_ABORTED = 130

# errno -> what it means for a path the user gave (the path is put in front)
_OS_REASONS = {
    errno.EACCES: "permission denied (choose a writable --home or $SONGTRACE_HOME, or --out)",
    errno.EPERM: "operation not permitted (choose a writable --home or $SONGTRACE_HOME, or --out)",
    errno.EROFS: "read-only file system (choose a writable --home or $SONGTRACE_HOME, or --out)",
    errno.EEXIST: "is a file where a directory is needed",
    errno.ENOTDIR: "has a file where a directory is needed",
    errno.EISDIR: "is a directory where a file is needed",
    errno.ENOENT: "does not exist",
    errno.ENOSPC: "no space left on the device",
}


def one_line(text: str) -> str:
    """Collapse a message onto one line."""
    return " ".join(str(text).split())


def os_error_line(e: OSError) -> str:
    """`PATH: what is wrong` for an operating-system error on a path."""
    reason = _OS_REASONS.get(e.errno or 0, e.strerror or str(e))
    return one_line(f"{e.filename}: {reason}" if e.filename else reason)


def command_path(app: Any, argv: list[str]) -> str:
    """`songtrace world import` for argv ["world", "import", ...]: the leading words that name commands."""
    import typer.main

    command, words = typer.main.get_command(app), ["songtrace"]
    for token in argv:
        sub = getattr(command, "commands", {}).get(token)
        if sub is None:
            break
        command, words = sub, [*words, token]
    return " ".join(words)


def usage_error_line(e: Any, fallback_command: str) -> str:
    """A click/typer usage error as one line, with the command whose --help explains it."""
    ctx = getattr(e, "ctx", None)
    command = ctx.command_path if ctx is not None else fallback_command
    return f"{one_line(e.format_message())} (see `{command} --help`)"


def missing_extra_message(e: ImportError, subject: str) -> str | None:
    """`SUBJECT needs the `EXTRA` extra: pip install ...` when `e` is a missing optional dependency, else None.

    The extras come from the one table `songtrace.errors.PACKAGES` (a test keeps it equal to pyproject.toml).
    """
    module = (e.name or "").split(".")[0]
    if not module or module == "songtrace" or module not in PACKAGES:
        return None
    extra = PACKAGES[module][1]
    if extra is None:
        return None
    return f"{subject} needs the `{extra}` extra: pip install 'songtrace[{extra}]' (could not import {module})"


def set_threads_from_env() -> None:
    """`SONGTRACE_THREADS=N` sets torch's thread count (one is fastest on a machine shared with other jobs)."""
    value = os.environ.get("SONGTRACE_THREADS")
    if not value:
        return
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise SongtraceError(f"SONGTRACE_THREADS must be a whole number >= 1, got {value!r}")
    import torch

    torch.set_num_threads(threads)


def run_reporting_errors(build_app: Callable[[], Any], argv: list[str] | None) -> int:
    """Run the app on `argv` (default: sys.argv) and return the exit code, reporting each refusal as one line."""
    import typer
    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer >= 0.29 vendors click (not exported)

    from songtrace.cli.options import console

    def refuse(line: str) -> int:
        console.print("error: " + line, markup=False, highlight=False, soft_wrap=True)
        return EXIT_REFUSED

    debug = os.environ.get("SONGTRACE_DEBUG") == "1"
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            set_threads_from_env()
            rv = build_app()(args=argv, prog_name="songtrace", standalone_mode=False)
        except BaseException as e:
            # a stage this command began and did not finish: a failure marks it failed (the corrected rerun just works),
            # an interrupt keeps its partial state for the rerun to resume; either way its lock is released
            from songtrace.artifacts import abandon_open_stages

            abandon_open_stages(failed=isinstance(e, Exception) and not isinstance(e, typer.Abort))
            raise
    except NoArgsIsHelpError as e:
        e.show()
        return e.exit_code
    except ClickException as e:
        if debug:
            raise
        refuse(usage_error_line(e, command_path(build_app(), argv)))
        return e.exit_code
    except SongtraceError as e:
        if debug:
            raise
        return refuse(one_line(str(e)))
    except OSError as e:
        if debug:
            raise
        return refuse(os_error_line(e))
    except ImportError as e:  # an optional extra imported inside a command
        message = missing_extra_message(e, f"`{command_path(build_app(), argv)}`")
        if message is None or debug:
            raise
        return refuse(message)
    except typer.Abort:
        console.print("aborted")
        return EXIT_ABORTED
    return rv if isinstance(rv, int) else 0
