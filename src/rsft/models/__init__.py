"""LightningModules that rsft fine-tunes on accepted sets."""

from rsft.models.base import FineTunedModel
from rsft.models.classifier import MLPClassifier
from rsft.models.flow import FlowModel

__all__ = ["FineTunedModel", "FlowModel", "MLPClassifier"]
