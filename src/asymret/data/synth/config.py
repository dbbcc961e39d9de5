"""Parameters of the synthetic benchmark (:class:`SynthConfig` and its named sizes), its version
and its file layout."""

from __future__ import annotations

from dataclasses import dataclass, replace

from asymret.errors import AsymretError

SYNTH_VERSION = "1.0"
"""Changes whenever the same seed and size would give different files."""

TEST_DIR = "synth"
TRAIN_DIR = "retrieval-synth"
GND_FILE = "gnd_synth.pkl"
TRAIN_DB_FILE = "retrieval-synth.pkl"
META_FILE = "meta.json"


@dataclass(frozen=True)
class SynthConfig:
    """Size and difficulty of the synthetic benchmark.

    Attributes:
        image_size: Longer side of every image in pixels (the other side is 3/4 of it).
        train_landmarks: Landmarks (clusters) of the ``train`` split.
        train_images_per_landmark: Images per training landmark.
        val_landmarks: Landmarks of the ``val`` split (disjoint from ``train``).
        val_images_per_landmark: Images per validation landmark.
        test_landmarks: Queried landmarks of the test set (disjoint from the training ones).
        queries_per_landmark: Queries per test landmark (each with its region of interest).
        database_images_per_landmark: Database images per test landmark, before images are
            added for a query that has fewer than ``MIN_QUERY_POSITIVES`` positives.
        distractor_landmarks: Landmarks in the database that no query asks for.
        images_per_distractor_landmark: Database images per distractor landmark.
        street_images: Database images of streets without a landmark.
        photo_images: Database images that are plain photographs (no building).
        max_view_angle: Largest yaw of a view away from a façade's normal, in degrees.
        wide_view_fraction: Share of views drawn anywhere rather than around a popular spot.
        occluders_per_image: Mean number of foreground objects per database/training image.
        extreme_light_fraction: Share of images at dusk or over-exposed.
        blur_fraction: Share of images with defocus blur.
        noise_level: Largest standard deviation of the sensor noise (0–255 scale).
        portrait_fraction: Share of images in portrait orientation.
        jpeg_quality: JPEG quality of every file.
    """

    image_size: int = 224
    train_landmarks: int = 100
    train_images_per_landmark: int = 24
    val_landmarks: int = 10
    val_images_per_landmark: int = 16
    test_landmarks: int = 10
    queries_per_landmark: int = 5
    database_images_per_landmark: int = 60
    distractor_landmarks: int = 30
    images_per_distractor_landmark: int = 15
    street_images: int = 300
    photo_images: int = 60
    max_view_angle: float = 80.0
    wide_view_fraction: float = 0.35
    occluders_per_image: float = 1.2
    extreme_light_fraction: float = 0.1
    blur_fraction: float = 0.3
    noise_level: float = 5.0
    portrait_fraction: float = 0.3
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        counts = {
            "image_size": self.image_size,
            "train_landmarks": self.train_landmarks,
            "train_images_per_landmark": self.train_images_per_landmark,
            "val_landmarks": self.val_landmarks,
            "val_images_per_landmark": self.val_images_per_landmark,
            "test_landmarks": self.test_landmarks,
            "queries_per_landmark": self.queries_per_landmark,
            "database_images_per_landmark": self.database_images_per_landmark,
        }
        for name, value in counts.items():
            if value < 1:
                raise AsymretError(f"SynthConfig.{name} must be at least 1, got {value}")
        if self.image_size < 32:
            raise AsymretError(f"SynthConfig.image_size must be at least 32, got {self.image_size}")
        if self.train_images_per_landmark < 2 or self.val_images_per_landmark < 2:
            raise AsymretError(
                "SynthConfig.train_images_per_landmark and val_images_per_landmark must be at "
                "least 2 (training pairs join two images of a landmark)"
            )
        for name in (
            "distractor_landmarks",
            "images_per_distractor_landmark",
            "street_images",
            "photo_images",
        ):
            if getattr(self, name) < 0:
                raise AsymretError(f"SynthConfig.{name} must not be negative")
        for name in (
            "wide_view_fraction",
            "extreme_light_fraction",
            "blur_fraction",
            "portrait_fraction",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise AsymretError(f"SynthConfig.{name} must lie in [0, 1]")
        if not 0.0 < self.max_view_angle < 89.0:
            raise AsymretError("SynthConfig.max_view_angle must lie in (0, 89) degrees")
        if self.occluders_per_image < 0 or self.noise_level < 0:
            raise AsymretError("SynthConfig: occluders_per_image and noise_level must be >= 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise AsymretError("SynthConfig.jpeg_quality must lie in [1, 100]")


SIZE_PRESETS: dict[str, SynthConfig] = {
    "small": SynthConfig(
        image_size=128,
        train_landmarks=12,
        train_images_per_landmark=10,
        val_landmarks=3,
        val_images_per_landmark=8,
        test_landmarks=4,
        queries_per_landmark=3,
        database_images_per_landmark=24,
        distractor_landmarks=6,
        images_per_distractor_landmark=8,
        street_images=32,
        photo_images=8,
    ),
    "default": SynthConfig(),
    "large": SynthConfig(
        image_size=256,
        train_landmarks=300,
        train_images_per_landmark=32,
        val_landmarks=30,
        val_images_per_landmark=24,
        test_landmarks=14,
        queries_per_landmark=5,
        database_images_per_landmark=80,
        distractor_landmarks=90,
        images_per_distractor_landmark=20,
        street_images=1600,
        photo_images=400,
        wide_view_fraction=0.45,
        occluders_per_image=1.6,
    ),
}
"""``small`` for tests (seconds), ``default`` (well under a minute), ``large`` (harder)."""


def synth_config(size: str = "default", **overrides) -> SynthConfig:
    """The parameters of a named size, with any field changed by keyword.

    Raises:
        AsymretError: unknown size or field.
    """
    if size not in SIZE_PRESETS:
        raise AsymretError(f"unknown synth size {size!r}; expected one of {sorted(SIZE_PRESETS)}")
    try:
        return replace(SIZE_PRESETS[size], **overrides)
    except TypeError as exc:
        raise AsymretError(f"synth_config: {exc}") from exc
