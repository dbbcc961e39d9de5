"""Random streams: where every random choice of the benchmark comes from.

Everything is drawn from ``numpy.random.default_rng([seed, stream, *key])``, one stream per
purpose and one key per landmark or image, so the files are byte-identical for a seed whatever
the number of worker processes; JPEG quality is fixed, and neither pickles nor metadata hold a
timestamp.
"""

from __future__ import annotations

import numpy as np

# One random stream per purpose: default_rng([seed, stream, *key]).
_STREAM_LANDMARK = 1  # key: landmark id
_STREAM_TEXTURE = 2  # key: landmark id
_STREAM_SPOTS = 3  # key: landmark id
_STREAM_QUERIES = 4  # key: landmark id
_STREAM_PAIRS = 5  # key: landmark id
_STREAM_VIEW_SPOT = 6  # key: image key
_STREAM_VIEW = 7  # key: image key
_STREAM_RENDER = 8  # key: image key
_STREAM_ORDER = 9  # key: none
_STREAM_GROUND = 10  # key: ground texture variant
_STREAM_NOISE = 11  # key: none

# An image's key is (group, role, number): group is the landmark id, or _NO_LANDMARK.
_NO_LANDMARK = 2**31 - 1
_ROLE_PHOTO = 0  # database or training image
_ROLE_QUERY = 1
_ROLE_STREET = 2
_ROLE_PLAIN_PHOTO = 3


def _rng(seed: int, stream: int, *key: int) -> np.random.Generator:
    """The random generator of one purpose (stream) and one landmark or image (key)."""
    return np.random.default_rng([seed, stream, *key])
