"""Datasets, tokenization and batching; every datamodule yields ``(tokens, mask, target)`` batches."""

from normbench.data.classification import TextClassificationDataModule
from normbench.data.mr import MRPolarityDataModule

__all__ = ["MRPolarityDataModule", "TextClassificationDataModule"]
