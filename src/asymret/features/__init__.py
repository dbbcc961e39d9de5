"""Descriptor extraction and the on-disk feature store.

- :mod:`asymret.features.extract`: images to vectors (same-size batches, multi-scale
  descriptors, the record of how they were made) and :func:`extract_to_store`;
- :mod:`asymret.features.store`: :class:`FeatureStore`, the memory-mapped (N, D) array with its
  ids and provenance, and its on-disk format. It does not depend on the extraction.

The public names of both are re-exported here.
"""

from asymret.features.extract import (
    DEFAULT_CHUNK_SIZE,
    Network,
    SizeBatchSampler,
    check_scales,
    extract_to_store,
    extract_vectors,
    extraction_meta,
    model_fingerprint,
    multiscale_power,
    multiscale_vectors,
    resized_size,
    resized_sizes,
    retrieval_net,
    thumbnail_size,
)
from asymret.features.store import (
    IDS_FILE,
    META_FILE,
    STORE_DTYPES,
    STORE_FORMAT,
    STORE_VERSION,
    VECTORS_FILE,
    FeatureStore,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "IDS_FILE",
    "META_FILE",
    "STORE_DTYPES",
    "STORE_FORMAT",
    "STORE_VERSION",
    "VECTORS_FILE",
    "FeatureStore",
    "Network",
    "SizeBatchSampler",
    "check_scales",
    "extract_to_store",
    "extract_vectors",
    "extraction_meta",
    "model_fingerprint",
    "multiscale_power",
    "multiscale_vectors",
    "resized_size",
    "resized_sizes",
    "retrieval_net",
    "thumbnail_size",
]
