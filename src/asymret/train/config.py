"""Training configuration: dataclass defaults → YAML file → ``key=value`` overrides.

Options are orthogonal instead of one ``--mode`` string: the loss, whether its references are
the teacher's vectors (asymmetric) or the student's (symmetric), which references are
positives, and how negatives are mined. The resolved configuration is saved beside the
run's outputs (``config.yaml``) so that every result names exactly what produced it.
"""

from __future__ import annotations

import math
import types
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from asymret.errors import AsymretError
from asymret.files import write_text_atomic
from asymret.losses import LossTerm, parse_loss_spec, term_params
from asymret.mining import MINING_BACKENDS, check_backend
from asymret.runtime import check_device
from asymret.train.presets import resolve_config_path

SIMILARITIES = ("asymmetric", "symmetric")
POSITIVES = ("pair", "self", "pair+self")
MININGS = ("hard", "random", "none")
SAMPLERS = ("tuples", "images")
MINING_QUERIES = ("student", "teacher")
PROJECTION_INITS = ("ridge", "random")


@dataclass
class DataConfig:
    """Where the training and validation images come from.

    Attributes:
        root: data root (``None``: ``$ASYMRET_DATA`` or ``~/.cache/asymret``).
        train_db: SfM-format training db folder name under the root, or a photo folder with
            ``images.csv`` (its rows with role train; see :mod:`asymret.data.folder`).
        val_sets: revisitop-format test sets under the root, or photo folders (their query
            and database rows), evaluated during training.
        imsize: longer side of the student's training images (362 in fast recipes, 1024 as
            published).
        val_imsize: longer side of the student's validation images.
        teacher_imsize: longer side of the training images the teacher's bank is extracted
            at (``None``: ``imsize``); a deployment's teacher may see more pixels than its
            phone-side student.
        val_teacher_imsize: longer side of the validation images the teacher indexes
            (``None``: ``val_imsize``).
        skip_unreadable: skip unreadable training images (and count them) instead of failing.
        draft_decode: decode the student's training and validation JPEGs in draft mode (DCT
            scaling at 1/2, 1/4 or 1/8, then the same LANCZOS resize to the same size) when
            they shrink 2× or more; faster, pixel values differ slightly, so off as published
            (see :func:`asymret.data.images.load_image`). The teacher's bank is decoded in full.
    """

    root: str | None = None
    train_db: str = "retrieval-SfM-120k"
    val_sets: list[str] = field(default_factory=lambda: ["roxford5k", "rparis6k"])
    imsize: int = 362
    val_imsize: int = 1024
    teacher_imsize: int | None = None
    val_teacher_imsize: int | None = None
    skip_unreadable: bool = False
    draft_decode: bool = False

    @property
    def teacher_train_imsize(self) -> int:
        """Longer side of the training images the teacher's bank holds."""
        return self.imsize if self.teacher_imsize is None else self.teacher_imsize

    @property
    def teacher_val_imsize(self) -> int:
        """Longer side of the validation images the teacher indexes."""
        return self.val_imsize if self.val_teacher_imsize is None else self.val_teacher_imsize


@dataclass
class ModelsConfig:
    """Student and teacher networks.

    Attributes:
        student: model name (``<arch>-gem-<dim>``) or a saved model folder.
        pretrained: start the student's trunk from offline ImageNet weights.
        pretrained_path: start it from this local trunk checkpoint instead (timm names).
        teacher: saved model folder, reference checkpoint (``.pth``) or model name; a relative
            path that does not exist is looked up under the data root. ``None`` for symmetric
            training without a teacher.
        teacher_pretrained: a teacher given by model name starts from offline ImageNet
            weights (e.g. ``tf_efficientnet_lite2-gem`` used off the shelf).
        projection_init: ``ridge`` (closed-form fit of the teacher's vectors on the student's
            pooled features before any step) or ``random`` (as published).
        ridge_images: training images used for the ridge fit (0: all).
        ridge_lambda: ridge regularisation, relative to the mean feature energy.
    """

    student: str = "efficientnet_b3-gem-2048"
    pretrained: bool = True
    pretrained_path: str | None = None
    teacher: str | None = None
    teacher_pretrained: bool = True
    projection_init: str = "ridge"
    ridge_images: int = 4000
    ridge_lambda: float = 1e-3


@dataclass
class LossConfig:
    """The loss and what it compares.

    Attributes:
        name: a registered loss (contrastive, triplet, multi_similarity, regression, rkd,
            darkrank, raml, csd, rank_order, ...) or a weighted sum of them,
            ``"contrastive + 0.5*csd"`` (terms ``[WEIGHT*]NAME`` joined by ``+``; see
            :mod:`asymret.losses.composite`).
        params: keyword arguments of the loss (e.g. ``{margin: 0.7}``); for a sum, per term
            (``{contrastive: {margin: 0.7}, csd: {teacher_temperature: 0.05}}``, on the
            command line ``loss.params.csd.teacher_temperature=0.05``).
        similarity: ``asymmetric`` (references are teacher vectors) or ``symmetric``.
        positives: ``pair`` (the matching image), ``self`` (the anchor's own teacher vector
            g(a)), or ``pair+self`` (both: Contr⁺).
    """

    name: str = "contrastive"
    params: dict[str, Any] = field(default_factory=dict)
    similarity: str = "asymmetric"
    positives: str = "pair"


@dataclass
class MiningConfig:
    """Per-epoch training examples: tuples (pairs and their negatives), or random images.

    Attributes:
        sampler: ``tuples`` (``num_pairs`` training pairs, negatives as ``negatives`` says)
            or ``images`` (``num_images`` random training images, no pairs and no
            negatives: the reference's ``reg`` mode for regression and ``rand`` mode for
            RKD and DarkRank, whose batches are then ``optim.batch_size`` random images).
        num_images: random images per epoch with ``sampler=images`` (20000 in the reference).
        negatives: ``hard`` (nearest other-cluster images of a random pool, one per cluster),
            ``random`` or ``none``.
        num_pairs: training pairs sampled per epoch (2000 in the reference).
        pool_size: random pool of negative candidates per epoch (20000 in the reference).
        num_negatives: negatives per tuple (5 in the reference).
        query_vectors: mine with the ``student``'s query vectors or the ``teacher``'s.
        backend: hard-negative and teacher-neighbour search: ``torch`` (matrix products on
            ``run.device``) or ``faiss`` (an exact inner-product index on the CPU; needs
            ``faiss-cpu``). Both apply the same rule; they can differ only where scores
            differ by float rounding.
        neighbours: K, each anchor's nearest teacher neighbours in the whole training set
            for neighbourhood losses (csd, rank_order), mined once from the teacher's bank
            and cached in it (:mod:`asymret.neighbours`); 96 as CSD and ROP are trained.
    """

    sampler: str = "tuples"
    num_images: int = 20000
    negatives: str = "hard"
    num_pairs: int = 2000
    pool_size: int = 20000
    num_negatives: int = 5
    query_vectors: str = "student"
    backend: str = "torch"
    neighbours: int = 96


@dataclass
class OptimConfig:
    """Optimiser and schedule (reference: Adam, lr 1e-6, wd 1e-6, lr × exp(−0.01) per epoch).

    Attributes:
        batch_size: tuples per step, processed as one batch.
        freeze_batchnorm: keep BatchNorm statistics fixed while fine-tuning.
        trainable_stages: train only the trunk's last this many stages (and the pooling and
            projection); the frozen stages' activations are computed once per image and
            cached (fast partial fine-tuning on a CPU). 0 trains the whole trunk.
        amp: bf16 autocast (``None``: on for CUDA, off for CPU).
        channels_last: channels-last memory format (``None``: on for CPU and CUDA).
    """

    epochs: int = 100
    batch_size: int = 5
    lr: float = 1e-6
    weight_decay: float = 1e-6
    lr_decay: float = math.exp(-0.01)
    freeze_batchnorm: bool = True
    trainable_stages: int = 0
    amp: bool | None = None
    channels_last: bool | None = None


@dataclass
class RunConfig:
    """Run bookkeeping.

    Attributes:
        out: run folder (checkpoints, logs, config.yaml, the final student).
        seed: seeds sampling, mining order and every step.
        device: ``cpu``, ``cuda``, ``cuda:1``...
        val_every: validate every this many epochs (0: only at the end).
        checkpoint_every: save a resumable checkpoint every this many steps (and each epoch).
        teacher_bank: folder of the teacher's training-image feature store (``None``: inside
            the run folder); share it between students of one teacher.
        activation_cache: file keeping the frozen stages' activations (with
            ``optim.trainable_stages``) across runs of the same trunk; ``None``: the run's
            ``checkpoints/activations.safetensors``. Saved with every checkpoint, so that a
            resumed run finds the activations it had (their rounding depends on the batch
            that computed them).
        num_workers: image-loading worker processes.
        decode_cache_mb: keep up to this many MiB of decoded training images in memory,
            shared by every run of the process (0: off); with ``num_workers: 0`` each image
            is then decoded once instead of every epoch and mining pass (see
            :class:`asymret.data.image_list.DecodeCache`). Same results with or without.
        progress: show progress bars.
    """

    out: str = "runs/train"
    seed: int = 0
    device: str = "cpu"
    val_every: int = 0
    checkpoint_every: int = 50
    teacher_bank: str | None = None
    activation_cache: str | None = None
    num_workers: int = 0
    decode_cache_mb: int = 0
    progress: bool = True


@dataclass
class TrainConfig:
    """Everything a training run needs; see each section's documentation."""

    data: DataConfig = field(default_factory=DataConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def loss_terms(self) -> tuple[LossTerm, ...]:
        """The terms of ``loss.name`` (one for a single loss).

        Raises:
            AsymretError: a bad loss specification.
        """
        return parse_loss_spec(self.loss.name)

    @property
    def relational(self) -> bool:
        """True when every loss term is over a batch of (student, teacher) vectors (RKD,
        DarkRank, RAML): each step then relates all of its images. In a sum with other
        kinds, a relational term relates the step's anchors f(a) with their g(a)."""
        return all(term.kind == "relational" for term in self.loss_terms)

    @property
    def uses_neighbours(self) -> bool:
        """True when a loss term needs each anchor's teacher neighbours (CSD, rank order)."""
        return any(term.kind == "neighbour" for term in self.loss_terms)

    @property
    def needs_teacher(self) -> bool:
        return (
            any(term.kind != "tuple" for term in self.loss_terms)
            or self.loss.similarity == "asymmetric"
            or "self" in self.loss.positives
            or self.mining.query_vectors == "teacher"
        )

    def validate(self) -> None:
        """Raise AsymretError for an impossible combination of options."""
        choices = [
            ("loss.similarity", self.loss.similarity, SIMILARITIES),
            ("loss.positives", self.loss.positives, POSITIVES),
            ("mining.sampler", self.mining.sampler, SAMPLERS),
            ("mining.negatives", self.mining.negatives, MININGS),
            ("mining.query_vectors", self.mining.query_vectors, MINING_QUERIES),
            ("mining.backend", self.mining.backend, MINING_BACKENDS),
            ("models.projection_init", self.models.projection_init, PROJECTION_INITS),
        ]
        term_params(self.loss_terms, self.loss.params)
        for key, value, allowed in choices:
            if value not in allowed:
                raise AsymretError(f"{key}={value!r}; expected one of {', '.join(allowed)}")
        try:
            check_backend(self.mining.backend, self.run.device)
        except AsymretError as exc:
            raise AsymretError(f"mining.backend={self.mining.backend}: {exc}") from None
        self._validate_ranges()
        if self.needs_teacher and not self.models.teacher:
            raise AsymretError(
                f"loss {self.loss.name} with similarity={self.loss.similarity}, "
                f"positives={self.loss.positives} needs models.teacher"
            )
        if self.loss.similarity == "symmetric" and self.loss.positives != "pair":
            raise AsymretError("symmetric training takes positives=pair (g(a) is a teacher vector)")
        if self.mining.sampler == "images":
            self._validate_image_sampler()
        for key, value in (
            ("data.imsize", self.data.imsize),
            ("data.val_imsize", self.data.val_imsize),
            ("data.teacher_imsize", self.data.teacher_train_imsize),
            ("data.val_teacher_imsize", self.data.teacher_val_imsize),
            ("optim.batch_size", self.optim.batch_size),
            ("optim.epochs", self.optim.epochs),
            ("mining.num_pairs", self.mining.num_pairs),
            ("mining.num_images", self.mining.num_images),
            ("mining.neighbours", self.mining.neighbours),
        ):
            if value < 1:
                raise AsymretError(f"{key} must be at least 1, got {value}")
        if self.run.decode_cache_mb < 0:
            raise AsymretError(
                f"run.decode_cache_mb must be 0 (off) or more, got {self.run.decode_cache_mb}"
            )
        if self.optim.trainable_stages < 0:
            raise AsymretError(
                f"optim.trainable_stages must be 0 (whole trunk) or more, got "
                f"{self.optim.trainable_stages}"
            )
        if self.relational and self.images_per_step < 3:
            raise AsymretError("relational losses need at least 3 images per step")

    def _validate_image_sampler(self) -> None:
        """Random images carry no pairs: only g(a) or a batch relation can be learned."""
        if self.mining.negatives != "none":
            raise AsymretError(
                f"mining.sampler=images draws single images, which have no negatives; set "
                f"mining.negatives=none (got {self.mining.negatives!r})"
            )
        tuple_terms = any(term.kind == "tuple" for term in self.loss_terms)
        if tuple_terms and (
            self.loss.similarity != "asymmetric" or self.loss.positives != "self"
        ):
            raise AsymretError(
                f"mining.sampler=images with loss {self.loss.name} needs "
                "loss.similarity=asymmetric and loss.positives=self (an image's only "
                "reference is its teacher vector g(a)); use mining.sampler=tuples for pairs"
            )

    def _validate_ranges(self) -> None:
        """Rates, penalties and run settings out of range, and a device this machine lacks."""
        bounded = [
            ("optim.lr", self.optim.lr, "a positive number", self.optim.lr > 0),
            ("optim.weight_decay", self.optim.weight_decay, "0 or more",
             self.optim.weight_decay >= 0),
            ("optim.lr_decay", self.optim.lr_decay,
             "in (0, 1] (the lr is multiplied by it after every epoch)",
             0 < self.optim.lr_decay <= 1),
            ("models.ridge_lambda", self.models.ridge_lambda, "0 or more",
             self.models.ridge_lambda >= 0),
        ]
        for key, value, expected, in_range in bounded:
            if not (math.isfinite(value) and in_range):
                raise AsymretError(f"{key} must be {expected}, got {value}")
        for key, value, least in (
            ("run.checkpoint_every", self.run.checkpoint_every, 1),
            ("run.num_workers", self.run.num_workers, 0),
            ("run.val_every", self.run.val_every, 0),
            ("run.seed", self.run.seed, 0),
            ("mining.pool_size", self.mining.pool_size, 0),
            ("mining.num_negatives", self.mining.num_negatives, 0),
        ):
            if value < least:
                raise AsymretError(f"{key} must be at least {least}, got {value}")
        try:
            check_device(self.run.device)
        except AsymretError as exc:
            raise AsymretError(f"run.device={self.run.device}: {exc}") from None

    @property
    def images_per_step(self) -> int:
        """Images the student sees per step when every tuple's images are distinct."""
        per_example = 1 if self.mining.sampler == "images" else 2 + self.num_negatives
        return self.optim.batch_size * per_example

    @property
    def num_negatives(self) -> int:
        return 0 if self.mining.negatives == "none" else self.mining.num_negatives

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(section: str, key: str, value: Any, expected: Any) -> Any:
    """Check a YAML/CLI value against the dataclass field type (ints, "1e-5" for floats)."""
    if value is None:
        return None
    union = get_origin(expected) in (Union, types.UnionType)
    candidates = [c for c in get_args(expected) if c is not type(None)] if union else [expected]
    for candidate in candidates:
        base = get_origin(candidate) or candidate
        if base is float and isinstance(value, int | str) and not isinstance(value, bool):
            try:  # YAML reads "1e-5" (no decimal point) as a string
                return float(value)
            except ValueError:
                continue
        if base is int and isinstance(value, bool):
            continue
        if isinstance(value, base):
            return value
    raise AsymretError(f"{section}.{key}={value!r}: expected {expected}")


def _merge(config: TrainConfig, overrides: dict[str, Any], source: str) -> None:
    sections = {f.name: getattr(config, f.name) for f in fields(config)}
    for section_name, values in overrides.items():
        if section_name not in sections:
            raise AsymretError(
                f"{source}: unknown section '{section_name}'; known: {', '.join(sections)}"
            )
        if not isinstance(values, dict):
            raise AsymretError(f"{source}: '{section_name}' must be a mapping")
        section = sections[section_name]
        hints = get_type_hints(type(section))
        for key, value in values.items():
            if key not in hints:
                known = ", ".join(f.name for f in fields(section))
                raise AsymretError(
                    f"{source}: unknown key '{section_name}.{key}'; known: {known}"
                )
            setattr(section, key, _coerce(section_name, key, value, hints[key]))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-5", "loss.params.margin=0.5"]`` → nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or "." not in key:
            raise AsymretError(f"override '{pair}' is not section.key=value")
        value = yaml.safe_load(raw) if raw else None
        parts = key.split(".")
        if len(parts) > 2 and parts[1] != "params":
            raise AsymretError(f"override '{pair}': only loss.params.<name> may nest deeper")
        target = nested.setdefault(parts[0], {})
        if len(parts) == 2:
            target[parts[1]] = value
        else:
            if not isinstance(target.get("params"), dict):  # after loss.params=null
                target["params"] = {}
            target["params"][".".join(parts[2:])] = value
    return nested


def _merge_params(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``loss.params`` with command-line ``loss.params.<key>`` overrides; a dotted key
    (``csd.teacher_temperature``, a term's parameter in a loss sum) goes into its term's
    mapping."""
    merged = {key: dict(value) if isinstance(value, dict) else value
              for key, value in params.items()}
    for key, value in overrides.items():
        term, dot, name = key.partition(".")
        if not dot:
            merged[key] = value
            continue
        if not isinstance(merged.get(term, {}), dict):
            raise AsymretError(f"loss.params.{key}: loss.params.{term} is not a mapping")
        merged.setdefault(term, {})[name] = value
    return merged


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file (or preset, by name), then ``section.key=value``
    overrides; validated. ``loss.params=<mapping>`` replaces the file's loss parameters
    (``{}`` or ``null`` clears them); ``loss.params.<name>=<value>`` sets one.

    Raises:
        AsymretError: unreadable YAML, unknown keys, wrong types, impossible combinations.
    """
    config = TrainConfig()
    if path is not None:
        path = resolve_config_path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise AsymretError(f"{path}: cannot read config ({exc})") from exc
        if not isinstance(loaded, dict):
            raise AsymretError(f"{path}: a config file must be a mapping of sections")
        _merge(config, loaded, str(path))
    if overrides:
        parsed = parse_overrides(overrides)
        params = parsed.get("loss", {}).pop("params", None)
        _merge(config, parsed, "command line")
        if any(pair.partition("=")[0] == "loss.params" for pair in overrides):
            config.loss.params = {}  # loss.params={...} replaces the file's; {} or null clears
        if params is not None and not isinstance(params, dict):
            raise AsymretError(f"loss.params={params!r}: expected a mapping, {{}} or null")
        if params:
            config.loss.params = _merge_params(config.loss.params, params)
    config.validate()
    return config


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (atomically: a kill leaves the old file or
    the new one)."""
    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a TrainConfig from :meth:`TrainConfig.to_dict` output."""
    config = TrainConfig()
    _merge(config, data, "saved config")
    return config



RESUMABLE_CHANGES = ("optim.lr",)
"""Settings a resumed run may change: optim.lr (e.g. lower after a NaN stop). The ``run``
section may change too, except ``run.seed``; everything else must be as the run started."""


def read_run_config(path: str | Path) -> TrainConfig:
    """The configuration a run folder's ``config.yaml`` saved.

    Raises:
        AsymretError: naming ``path``, when it is missing, unreadable or not a configuration.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AsymretError(
            f"{path}: missing; a resume checks its settings against the run's saved ones, so "
            "put back the config.yaml the run wrote (or start a new run in another run.out)"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise AsymretError(f"{path}: cannot read the run's settings ({exc})") from None
    if not isinstance(data, dict):
        raise AsymretError(f"{path}: not a run configuration (a mapping of sections)")
    config = TrainConfig()
    _merge(config, data, str(path))
    return config


def check_resumable(saved: TrainConfig, config: TrainConfig, source: str | Path) -> None:
    """Refuse to resume the run that ``saved`` started with ``config`` when they differ in
    more than :data:`RESUMABLE_CHANGES` and the ``run`` section (except its seed).

    Raises:
        AsymretError: naming ``source`` and the first section that differs.
    """
    for section in ("data", "models", "loss", "mining", "optim"):
        before, now = getattr(saved, section), getattr(config, section)
        if section == "optim":
            now = replace(now, lr=before.lr)
        if before != now:
            keys = [f.name for f in fields(before)
                    if getattr(before, f.name) != getattr(now, f.name)]
            raise AsymretError(
                f"{source}: the run was started with different '{section}' settings "
                f"({', '.join(f'{section}.{key}' for key in keys)}); resume with the same "
                f"configuration (a resume may change only {', '.join(RESUMABLE_CHANGES)} and run.*)"
            )
    if saved.run.seed != config.run.seed:
        raise AsymretError(
            f"{source}: the run was started with run.seed={saved.run.seed}, not "
            f"{config.run.seed}; every draw derives from it, so a resume keeps it"
        )
