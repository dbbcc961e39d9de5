"""Synthetic landmarks ("synth"): an embedded benchmark in the official file formats.

:func:`generate_synth` writes, from a seed and nothing else,

- ``synth/gnd_synth.pkl`` and ``synth/jpg/<name>.jpg``: a revisitop-style test set (query
  images are their own files; each query has a ``bbx`` crop box and ``easy``/``hard``/``junk``
  database indices; the database holds distractors),
- ``retrieval-synth/retrieval-synth.pkl`` and ``retrieval-synth/ims/<cid[-2:]>/<cid[-4:-2]>/
  <cid[-6:-4]>/<cid>``: an SfM-120k-style training db with ``train`` and ``val`` splits,
- ``synth/meta.json``: seed, size, generator version, parameters and the true landmark of
  every image (for checks; the readers never need it),

so that every real code path (readers, training with mining, extraction, evaluation) runs on it
without a download. The pickles are written by the datasets' own writers,
:func:`~asymret.data.revisitop.write_gnd` and :func:`~asymret.data.sfm120k.write_training_db`.

Every image is a pinhole-camera photograph of a 3D scene: sky with clouds, textured ground,
neighbouring buildings of random design (clutter), the landmark, and foreground objects that
occlude it. The modules, each using only those above it:

- :mod:`~asymret.data.synth.streams`: the random streams that make the files deterministic;
- :mod:`~asymret.data.synth.config`: :class:`SynthConfig`, the named sizes, the file layout;
- :mod:`~asymret.data.synth.photos`: the scikit-image photographs, materials and colours;
- :mod:`~asymret.data.synth.geometry`: cameras, quads and the landmark buildings;
- :mod:`~asymret.data.synth.scene`: what a photograph shows (light, occluders) and which
  wall points it sees;
- :mod:`~asymret.data.synth.views`: viewpoints of database, training and query images;
- :mod:`~asymret.data.synth.labels`: the easy/hard/junk rules and the training pairs;
- :mod:`~asymret.data.synth.textures`: façade textures;
- :mod:`~asymret.data.synth.render`: the photograph a view describes;
- :mod:`~asymret.data.synth.plan`: every view and the ground truth, from the seed alone;
- :mod:`~asymret.data.synth.writer`: :func:`generate_synth`, rendering and writing the files.
"""

from asymret.data.synth.config import (
    GND_FILE,
    META_FILE,
    SIZE_PRESETS,
    SYNTH_VERSION,
    TEST_DIR,
    TRAIN_DB_FILE,
    TRAIN_DIR,
    SynthConfig,
    synth_config,
)
from asymret.data.synth.labels import MIN_QUERY_POSITIVES
from asymret.data.synth.writer import generate_synth

__all__ = [
    "GND_FILE",
    "META_FILE",
    "MIN_QUERY_POSITIVES",
    "SIZE_PRESETS",
    "SYNTH_VERSION",
    "TEST_DIR",
    "TRAIN_DB_FILE",
    "TRAIN_DIR",
    "SynthConfig",
    "generate_synth",
    "synth_config",
]
