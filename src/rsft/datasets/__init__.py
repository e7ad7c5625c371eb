"""Datasets rsft ships or knows how to read (credit decisions: Adult, German credit, COMPAS)."""

from rsft.datasets.credit_data import (
    CreditSplit,
    DatasetUnavailableError,
    TabularTable,
    load_credit_split,
    load_table,
    split_table,
)

__all__ = ["CreditSplit", "DatasetUnavailableError", "TabularTable", "load_credit_split", "load_table", "split_table"]
