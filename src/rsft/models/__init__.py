"""LightningModules that rsft fine-tunes on accepted sets."""

from rsft.models.base import FineTunedModel
from rsft.models.classifier import MLPClassifier
from rsft.models.flow import FlowModel
from rsft.models.tabular import BinaryTabularClassifier, LogisticRegression, MLPTabularClassifier

__all__ = [
    "BinaryTabularClassifier",
    "FineTunedModel",
    "FlowModel",
    "LogisticRegression",
    "MLPClassifier",
    "MLPTabularClassifier",
]
