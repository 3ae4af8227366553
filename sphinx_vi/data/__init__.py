"""Data: the synthetic world, readers for real formats, encoding, mixtures and batching."""

from .batching import LengthGroupedBatches, mix, padding_fraction
from .encode import EncodedDataset, EncodedSample, SampleEncoder, collate, collate_packed, pack_rows
from .samples import LoadReport, LoadResult, Sample, TooManyBadRowsError
from .sources import load_any

__all__ = [
    "EncodedDataset",
    "EncodedSample",
    "LengthGroupedBatches",
    "LoadReport",
    "LoadResult",
    "Sample",
    "SampleEncoder",
    "TooManyBadRowsError",
    "collate",
    "collate_packed",
    "load_any",
    "mix",
    "pack_rows",
    "padding_fraction",
]
