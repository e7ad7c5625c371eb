"""LightningModules that rsft fine-tunes on accepted sets."""

from rsft.models.base import FineTunedModel
from rsft.models.causal_lm import CausalLM
from rsft.models.classifier import MLPClassifier
from rsft.models.flow import FlowModel
from rsft.models.gan import GANModel
from rsft.models.tabular import BinaryTabularClassifier, LogisticRegression, MLPTabularClassifier
from rsft.models.tiny_gpt import TinyGPT

__all__ = [
    "BinaryTabularClassifier",
    "CausalLM",
    "FineTunedModel",
    "FlowModel",
    "GANModel",
    "LogisticRegression",
    "MLPClassifier",
    "MLPTabularClassifier",
    "TinyGPT",
]
