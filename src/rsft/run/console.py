"""What reaches the console: rsft's own lines and real warnings, not library notices nobody asked for.

Two notices are dropped, each matched by its message and where it comes from, so that every other warning
and log line still shows:

- Lightning's "💡 Tip: ... litlogger ..." advertisement, logged at INFO by its ``rank_zero`` logger whenever
  a Trainer is built without a LitLogger;
- torch's ``FutureWarning`` that ``LeafSpec`` is deprecated, raised from Lightning's own ``_pytree`` helper
  (nothing the user can change).
"""

from __future__ import annotations

import logging
import warnings

#: Loggers that Lightning's ``rank_zero_info`` writes through (the fabric and the trainer package).
RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("💡 Tip:") and "litlogger" in message)


_TIP_FILTER = _DropLitLoggerTip()


def quiet_library_notices() -> None:
    """Drop the two notices above (idempotent: safe to call at the start of every run)."""
    for name in RANK_ZERO_LOGGERS:
        logging.getLogger(name).addFilter(_TIP_FILTER)  # a filter already there is not added twice
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.utilities\._pytree",
    )
