"""Whether a view has offline progress: what tells a lost Redis from a view never run.

A Redis without a view's epoch key is either new to the view or lost (the
epoch contract in ``sinks.redis_layout``). A reader that saw the key before
knows which; one started after the loss does not, until the job's next write
marks the loss. Iceberg does: a view with a committed progress table has been
written, so its online horizon cannot rightly be empty.

The check reads table metadata only (no data files, no pyarrow) and only for
views whose epoch is absent, which a healthy deployment never has; its answer
is kept for ``ttl_s`` so a view never run costs one catalog lookup per period,
not one per read. A catalog that cannot be read answers None: the reader then
behaves as without the check, and says so in its log once per period.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pyiceberg.exceptions import NoSuchTableError

from features.definition import FeatureView
from parity.config import IcebergConfig
from sinks import iceberg

log = logging.getLogger(__name__)


class OfflineProgress:
    """``has_progress(view)``: True once the view has committed offline progress."""

    def __init__(
        self,
        cfg: IcebergConfig | None = None,
        *,
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = cfg or IcebergConfig()
        self._ttl_s = ttl_s
        self._clock = clock
        self._known: dict[str, tuple[float, bool | None]] = {}  # view -> (checked at, answer)

    def has_progress(self, view: FeatureView) -> bool | None:
        """Whether the view's progress table has a snapshot; None when the catalog cannot say."""
        now = self._clock()
        known = self._known.get(view.qualified_name)
        if known is not None and now - known[0] < self._ttl_s:
            return known[1]
        answer = self._check(view)
        self._known[view.qualified_name] = (now, answer)
        return answer

    def _check(self, view: FeatureView) -> bool | None:
        try:
            catalog = iceberg.open_catalog(self._cfg)
            table = catalog.load_table(f"{self._cfg.namespace}.{iceberg.progress_table(view)}")
        except NoSuchTableError:
            return False
        except Exception as exc:  # the catalog's driver errors have no common base
            log.warning(
                "cannot read the offline progress of %s, so a lost Redis cannot be told apart "
                "from a view never run: %s",
                view.qualified_name,
                exc,
            )
            return None
        return table.current_snapshot() is not None
