"""Classifiers (speechbrain lobes, transformers backbones) behind one wrapper."""

from common.models.classifier import AudioClassifier

__all__ = ["AudioClassifier"]
