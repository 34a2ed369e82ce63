"""The one error root of parity and its typed subclasses.

Messages say what is wrong, where, and how to fix it. Library errors are
wrapped at the boundary with ``raise ... from``.
"""


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
