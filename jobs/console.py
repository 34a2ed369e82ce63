"""Lines a job prints for its user, told apart from its log.

A local job's stdout carries Flink's and Beam's log lines too. The job marks
what the user should see with ``USER_PREFIX``; ``parity job run`` shows only
those lines and keeps the whole output in the job's log file.
"""

from __future__ import annotations

USER_PREFIX = "parity: "


def say(line: str) -> None:
    """A line for the user, as opposed to the job's log; every line of it is marked."""
    print("\n".join(USER_PREFIX + part for part in line.split("\n")), flush=True)
