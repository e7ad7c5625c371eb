"""``python -m rsft.tools.table``: the same as ``rsft-table``."""

from rsft.tools.table import entry

entry()
