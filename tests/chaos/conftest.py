"""Chaos fixtures: the integration suite's isolation, reused.

Every scenario breaks something real (a kill, a stop, a flush, a delay, a
corrupt record) against the local stack and then checks both stores against
the independent reference in ``tests.integration.reference``.
"""

from tests.integration.conftest import isolated, stack_is_up

__all__ = ["isolated", "stack_is_up"]
