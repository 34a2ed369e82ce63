"""The one error root of parity and its typed subclasses.

Messages say what is wrong, where, and how to fix it. Library errors are
wrapped at the boundary with ``raise ... from``.
"""

import sys
from collections.abc import Callable


def run_command(prog: str, command: Callable[[], int]) -> int:
    """Run a command-line entry point: a ParityError exits 1 with its one-line cause, Ctrl-C exits 130.

    The one catch-all of a process; library code lets errors travel up to it.
    """
    try:
        return command()
    except ParityError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


class ParityError(Exception):
    """Root of every error parity raises on purpose."""


class DefinitionError(ParityError):
    """A feature definition is invalid; the message names the field and the fix."""


class ConfigError(ParityError):
    """A setting is missing or invalid."""


class SchemaError(ParityError):
    """An Avro schema is missing, invalid or incompatible."""


class InputError(ParityError):
    """User input (a file line, a CLI argument) is invalid."""


class StackError(ParityError):
    """A local service failed to start or answer; the message names its log file."""


class SinkError(ParityError):
    """A write to the online or offline store failed."""


class ReadError(ParityError):
    """A feature read failed or was asked for something that does not exist."""


class JobError(ParityError):
    """A Flink job failed to compile, start or finish."""
