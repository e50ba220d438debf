"""User errors: anticipated mistakes shown as one line, never as a traceback.

Library code raises `UserError` (or a subclass) with a message that names the file or the
configuration field and says how to fix it. The subclasses also derive from the built-in
exception a caller would expect (`ValueError`, `FileNotFoundError`), so code that catches
those keeps working. Entry points wrap their work in `exit_on_user_error`, which prints
`error: <message>` on stderr and exits with status 2; `debug=True` (the `--debug` flag, or
`--verbosity=1`) re-raises instead, so the traceback is there on demand. Anything that is not
a `UserError` is a bug and keeps its traceback. The cases are listed in `docs/errors.md`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An anticipated mistake of the user (bad file, bad option, bad data)."""


class ConfigError(UserError, ValueError):
    """A configuration field or command-line option has a value that cannot work."""


class DataError(UserError, ValueError):
    """A data file exists but its contents are not what the loader expects."""


class DataKeyError(UserError, KeyError):
    """A data file lacks an entry (subject, sequence, key) the run asks for."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the run needs does not exist."""


class WeightsError(UserError, ValueError):
    """Weights (a `.pth` file, a converted model, a checkpoint) do not fit the run."""


class UnsafeDirectoryError(UserError, FileExistsError):
    """Writing into a directory would replace files this program did not write."""


class ResumeMismatchError(UserError, ValueError):
    """A workdir's checkpoint was written with a configuration the resumed run contradicts."""


def one_line(error: BaseException) -> str:
    """The message of `error` on a single line (newlines and runs of spaces collapsed)."""
    return " ".join(str(error).split())


def debug_requested(argv: Sequence[str]) -> bool:
    """True when the command line asks for tracebacks: `--debug` or `--verbosity>=1` (`-v`)."""
    args = list(argv)
    for i, a in enumerate(args):
        if a in ("--debug", "--debug=true", "--debug=True", "--debug=1"):
            return True
        value = None
        for prefix in ("--verbosity=", "-v=", "--v="):
            if a.startswith(prefix):
                value = a[len(prefix) :]
        if a in ("--verbosity", "-v", "--v") and i + 1 < len(args):
            value = args[i + 1]
        if value is not None:
            try:
                if int(value) >= 1:
                    return True
            except ValueError:
                pass
    return False


def fail(message: str) -> None:
    """Prints `error: <message>` (one line) on stderr and exits with status 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def exit_on_user_error(fn: Callable[[], T], *, debug: bool = False) -> T:
    """Runs `fn()`; on a `UserError` prints one line and exits with status 2 (unless debug)."""
    try:
        return fn()
    except UserError as e:
        if debug:
            raise
        fail(one_line(e))
