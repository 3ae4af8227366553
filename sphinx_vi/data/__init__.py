"""Data: the synthetic world, readers for real formats, encoding, mixtures and batching."""

from .batching import LengthGroupedBatches, mix, padding_fraction
from .encode import IGNORE_INDEX, EncodedDataset, EncodedSample, SampleEncoder, collate
from .samples import LoadReport, LoadResult, Sample, TooManyBadRowsError
from .sources import load_any

__all__ = [
    "IGNORE_INDEX", "EncodedDataset", "EncodedSample", "LengthGroupedBatches", "LoadReport", "LoadResult",
    "Sample", "SampleEncoder", "TooManyBadRowsError", "collate", "load_any", "mix", "padding_fraction",
]
