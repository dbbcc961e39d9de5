"""The training loop: a student learns against a frozen teacher's precomputed vectors.

Per epoch: draw training pairs and a negative pool (:mod:`asymret.mining`), mine negatives,
then take ``batch_size`` tuples per step through the student as one batch; or, with
``mining.sampler=images``, draw random training images and take ``batch_size`` of them per
step (regression, RKD and DarkRank as the reference trains them). The teacher's
vectors of every training image are extracted once into a feature store (the "bank") and
read by row. Checkpoints (:mod:`asymret.train.checkpoint`) are written atomically and hold
everything needed to continue a killed run exactly: weights, optimiser and schedule, the
epoch's tuples and the step reached (every random draw derives from the seed, the epoch and
the step). The run's logs are :mod:`asymret.train.log`'s.

Nothing finished is lost to a late failure: every input the run needs (training db, validation
sets and their images, teacher, the teacher's validation vectors) is read before the first step,
and the student is saved before the final validation. With ``data.skip_unreadable`` the
unreadable training images are found before the first epoch and left out of every draw
(:class:`ReadableImages`).
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from asymret.bank import TeacherBank
from asymret.data import load_test_set, load_training_db
from asymret.data.image_list import ImageList, shared_decode_cache
from asymret.data.images import ImageReadError, open_image
from asymret.data.revisitop import RevisitopDataset
from asymret.errors import AsymretError
from asymret.evaluate import available_settings, evaluate_retrieval
from asymret.features import extract_vectors
from asymret.losses import LossInputs, LossSum
from asymret.mining import EpochTuples, epoch_generator, epoch_tuples, sample_images
from asymret.models import (
    ActivationCache,
    RetrievalNet,
    Teacher,
    create_model,
    load_network,
    save_model,
)
from asymret.neighbours import bank_neighbours
from asymret.runtime import prefers_channels_last
from asymret.teacher_record import write_teacher_record
from asymret.train.checkpoint import (
    CHECKPOINT_NAME,
    TrainState,
    load_checkpoint,
    save_checkpoint,
)
from asymret.train.config import TrainConfig, check_resumable, read_run_config, save_config
from asymret.train.distributed import (
    DistInfo,
    barrier,
    gather_shards,
    init_distributed,
    shard,
    shutdown,
    sum_across_ranks,
)
from asymret.train.log import VALIDATION_LOG_NAME, TrainLog, write_validation
from asymret.train.projection import (
    PooledFeatures,
    check_projection_init,
    fit_ridge,
    set_projection,
)
from asymret.train.steps import forward_by_size, tuple_references

T = TypeVar("T")

ACTIVATIONS_NAME = "activations.safetensors"
"""The run's activation cache (``optim.trainable_stages`` without ``run.activation_cache``),
in ``checkpoints/`` beside the checkpoint it belongs to."""


class TrainingDiverged(AsymretError):
    """The loss or the student's vectors became NaN/Inf; the last good checkpoint is kept."""


def set_batchnorm_eval(module: nn.Module) -> None:
    """Freeze BatchNorm running statistics (affine weights still learn), as the reference."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


def step_seed(seed: int, epoch: int, step: int) -> int:
    """Seed of one step's randomness (e.g. dropout), from the run seed, epoch and step."""
    return int(np.random.SeedSequence((seed, epoch, step, 1)).generate_state(1)[0])


def check_headers(paths: list[Path], what: str) -> None:
    """Read the header of every image in ``paths`` (cheap: no decoding).

    Raises:
        AsymretError: ``what`` and the first image that is missing or not an image.
    """
    for path in paths:
        try:
            with open_image(Path(path), "read image header"):
                pass
        except ImageReadError as exc:
            raise AsymretError(f"{what}: {exc}") from None


def _is_unreadable(item: tuple[torch.Tensor, int] | None) -> bool:
    """Collate an :class:`ImageList` item to whether it could not be read."""
    return item is None


@dataclass(frozen=True)
class ReadableImages:
    """The training db without its unreadable images, in which an epoch is drawn.

    Tuples are drawn in the "readable" index space (positions in :attr:`images`) and mapped
    back by :meth:`to_images`, so an unreadable image is in no pair, pool or reference. With
    every image readable the two spaces coincide and the draws are the same as on the db.

    Attributes:
        images: (N',) int64 the readable training images, ascending.
        query_indices, positive_indices: (P',) the db's pairs of two readable images, as
            positions in ``images``.
        clusters: (N',) the cluster of each readable image.
        excluded: unreadable images left out.
    """

    images: torch.Tensor
    query_indices: torch.Tensor
    positive_indices: torch.Tensor
    clusters: torch.Tensor
    excluded: int

    @classmethod
    def of(cls, db, unreadable: np.ndarray) -> ReadableImages:
        """The readable part of training db ``db``; ``unreadable``: (N,) bool."""
        readable = torch.from_numpy(~np.asarray(unreadable, dtype=bool))
        images = torch.nonzero(readable).reshape(-1)
        position = torch.full((len(readable),), -1, dtype=torch.int64)
        position[images] = torch.arange(len(images))
        queries = torch.as_tensor(np.asarray(db.query_indices), dtype=torch.int64)
        positives = torch.as_tensor(np.asarray(db.positive_indices), dtype=torch.int64)
        both = readable[queries] & readable[positives]
        clusters = torch.as_tensor(np.asarray(db.clusters))[images]
        return cls(images, position[queries[both]], position[positives[both]], clusters,
                   int((~readable).sum()))

    def to_images(self, tuples: EpochTuples) -> EpochTuples:
        """Tuples drawn in readable positions, as training-image indices."""
        return EpochTuples(self.images[tuples.query_indices],
                           self.images[tuples.positive_indices],
                           self.images[tuples.negative_indices])


class StepImages(Dataset):
    """Item ``s``: the images this rank needs at step ``s`` (``None`` for unreadable ones)."""

    def __init__(self, images: ImageList, step_images: list[torch.Tensor]):
        self.images = images
        self.step_images = step_images

    def __len__(self) -> int:
        return len(self.step_images)

    def __getitem__(self, step: int) -> list[torch.Tensor | None]:
        return [
            None if item is None else item[0]
            for item in (self.images[int(i)] for i in self.step_images[step])
        ]


def make_optimizer(
    net: RetrievalNet, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Adam:
    """Adam over the network's trainable parameter groups (GeM p at its own rate).

    On CPU and CUDA the fused kernel updates every parameter in one pass: on a 3.5M-parameter
    MobileNetV2 and 2 CPU cores, 4 ms a step against 27 ms for the loop over parameters.
    """
    return torch.optim.Adam(
        net.param_groups(lr, weight_decay), fused=device.type in ("cpu", "cuda")
    )


class Trainer:
    """Runs one training configuration; ``Trainer(config).run()`` returns the student folder.

    Args:
        config: the resolved configuration.
        resume: continue from the run folder's checkpoint.
    """

    def __init__(self, config: TrainConfig, resume: bool = False):
        config.validate()
        self.config = config
        self.resume = resume
        self.info: DistInfo = init_distributed(config.run.device)
        self.device = self.info.device
        self.run_dir = Path(config.run.out)
        self.checkpoint_path = self.run_dir / "checkpoints" / CHECKPOINT_NAME
        optim = config.optim
        cuda = self.device.type == "cuda"
        self.amp = cuda if optim.amp is None else optim.amp
        self.channels_last = (
            prefers_channels_last(self.device)
            if optim.channels_last is None
            else optim.channels_last
        )

    # ----------------------------------------------------------------- set-up

    def _prepare_run_dir(self) -> None:
        config_path = self.run_dir / "config.yaml"
        if self.resume:
            if not self.checkpoint_path.is_file():
                raise AsymretError(f"{self.checkpoint_path}: no checkpoint to resume from")
            check_resumable(read_run_config(config_path), self.config, config_path)
        elif self.checkpoint_path.exists():
            raise AsymretError(
                f"{self.run_dir}: already holds a training run; pass --resume to continue it "
                "or choose another run.out"
            )
        barrier(self.info)
        if self.info.is_main:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            if not self.resume:
                save_config(self.config, config_path)
                (self.run_dir / "checkpoints" / ACTIVATIONS_NAME).unlink(missing_ok=True)

    def _apply_resumed_lr(self) -> None:
        """Continue a resumed run at ``optim.lr`` when it differs from the checkpoint's: every
        group's rate and the schedule's base rates scale by new/old, so the decay goes on from
        the new rate; ``config.yaml`` then records it."""
        saved_lr = self.scheduler.base_lrs[0]
        if saved_lr == self.config.optim.lr:
            return
        factor = self.config.optim.lr / saved_lr
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
            group["initial_lr"] *= factor
        self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        if self.info.is_main:
            save_config(self.config, self.run_dir / "config.yaml")
            print(f"optim.lr {saved_lr:g} -> {self.config.optim.lr:g} from here on (now "
                  f"{self.optimizer.param_groups[0]['lr']:g} after the decay so far)", flush=True)

    def _build(self) -> None:
        config = self.config
        torch.manual_seed(config.run.seed)  # the student's random layers start the same everywhere
        # A db name under the root or a photo folder; db_name names its vectors in the bank.
        self.db_name, self.db = load_training_db(
            config.data.train_db, "train", config.data.root,
            require_pairs=config.mining.sampler == "tuples",
        )
        self.val_datasets = [(name, self._val_dataset(name)) for name in config.data.val_sets]
        self.train_images = ImageList(
            self.db.paths, config.data.imsize, skip_unreadable=config.data.skip_unreadable,
            draft=config.data.draft_decode,
            decode_cache=(shared_decode_cache(config.run.decode_cache_mb << 20)
                          if config.run.decode_cache_mb else None),
        )
        self.student: RetrievalNet = create_model(
            config.models.student,
            pretrained=config.models.pretrained,
            pretrained_path=config.models.pretrained_path,
        ).to(self.device)
        if config.models.teacher:  # before any extraction: the ridge start needs a teacher
            check_projection_init(self.student, config.models.projection_init)
        if self.channels_last:
            self.student.to(memory_format=torch.channels_last)
        self.activation_cache = None
        if config.optim.trainable_stages:
            self.activation_cache = ActivationCache(
                config.run.activation_cache or self.run_dir / "checkpoints" / ACTIVATIONS_NAME
            )
            self.student.freeze_trunk(config.optim.trainable_stages, self.activation_cache)
        self.teacher = (
            Teacher(load_network(config.models.teacher, config.data.root,
                                 pretrained=config.models.teacher_pretrained))
            if config.models.teacher
            else None
        )
        if self.teacher is not None and self.teacher.outputdim != self.student.outputdim:
            dim = self.teacher.outputdim
            raise AsymretError(
                f"teacher {config.models.teacher} gives {self.teacher.outputdim}-D vectors but "
                f"student {config.models.student} gives {self.student.outputdim}-D; project the "
                f"student to the teacher's dimension (e.g. '<arch>-conv{dim}-gem' or "
                f"'<arch>-gem-{dim}')"
            )
        self.loss_fn = LossSum(config.loss.name, config.loss.params)
        self.optimizer = make_optimizer(
            self.student, config.optim.lr, config.optim.weight_decay, self.device
        )
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(
            self.optimizer, gamma=config.optim.lr_decay
        )
        self.teacher_bank = None if self.teacher is None else TeacherBank(
            config.run.teacher_bank or self.run_dir / "teacher", self.teacher, device=self.device,
            amp=self.amp, channels_last=self.channels_last,
            num_workers=config.run.num_workers, progress=self._progress,
        )
        self.bank = self._training_vectors() if self.teacher is not None else None
        self.neighbours = self._teacher_neighbours() if config.uses_neighbours else None
        self.model = self._distributed(self.student) if self.info.distributed else self.student

    @staticmethod
    def _distributed(student: RetrievalNet) -> DistributedDataParallel:
        """DDP around the student alone, without per-forward buffer syncs: BatchNorm statistics
        are frozen or identical, and a rank runs one forward per image size, so ranks may differ
        in their number of forward calls."""
        options = inspect.signature(DistributedDataParallel).parameters
        newer = "forward_sync_buffers"
        return DistributedDataParallel(
            student, **{newer if newer in options else "broadcast_buffers": False}
        )

    def _extract(self, net: nn.Module, images: ImageList, indices: torch.Tensor) -> torch.Tensor:
        """(len(indices), D) vectors of a subset of images, extracted sharded across ranks."""
        local = extract_vectors(
            net, images.subset(shard(indices, self.info)), device=self.device, amp=self.amp,
            channels_last=self.channels_last,
            num_workers=self.config.run.num_workers, progress=self._progress,
        ).to(self.device)
        return gather_shards(local, len(indices), self.info)

    @property
    def _progress(self) -> bool:
        return self.config.run.progress and self.info.is_main

    def _main_rank_first(self, work: Callable[[], T]) -> T:
        """``work()`` on the main rank, then on the others once it is done: the main rank
        extracts what the others only open."""
        result = work() if self.info.is_main else None
        barrier(self.info)
        return work() if result is None else result

    def _training_vectors(self) -> np.ndarray:
        """The teacher's (N, D) vectors of all training images, extracted once, memory-mapped."""
        store = self._main_rank_first(lambda: self.teacher_bank.training_vectors(
            self.db_name, self.db, self.config.data.teacher_train_imsize,
            skip_unreadable=self.config.data.skip_unreadable,
        ))
        self.bank_store = store
        return store.vectors

    def _teacher_neighbours(self) -> torch.Tensor:
        """(N, K) each training image's K nearest teacher neighbours, from the bank's cache
        (computed once, on the main rank first; :func:`asymret.neighbours.bank_neighbours`)."""
        mining = self.config.mining
        try:
            return self._main_rank_first(lambda: bank_neighbours(
                self.bank_store, mining.neighbours, backend=mining.backend, device=self.device,
            ))
        except AsymretError as exc:
            raise AsymretError(f"mining.neighbours={mining.neighbours}: {exc}") from None

    def _bank_rows(self, indices: torch.Tensor) -> torch.Tensor:
        """Teacher vectors of training images ``indices`` (any shape) → (*indices.shape, D)."""
        flat = indices.reshape(-1).cpu().numpy()
        rows = torch.from_numpy(np.asarray(self.bank[flat], dtype=np.float32))
        return rows.to(self.device).reshape(*indices.shape, self.bank.shape[1])

    def _init_projection(self) -> None:
        config = self.config.models
        if (
            config.projection_init != "ridge"
            or self.student.whiten is None
            or self.teacher is None
        ):
            return
        count = len(self.db) if config.ridge_images <= 0 else min(config.ridge_images, len(self.db))
        generator = torch.Generator().manual_seed(self.config.run.seed)
        indices = torch.randperm(len(self.db), generator=generator)[:count].sort().values
        pooled = self._extract(PooledFeatures(self.student), self.train_images, indices)
        targets = self._bank_rows(indices).cpu()
        valid = (torch.isfinite(pooled).all(dim=1).cpu() & torch.isfinite(targets).all(dim=1))
        try:
            weight, bias = fit_ridge(pooled.cpu()[valid], targets[valid], config.ridge_lambda)
        except torch.linalg.LinAlgError:
            raise AsymretError(
                f"models.ridge_lambda={config.ridge_lambda}: the ridge fit is singular on "
                f"{int(valid.sum())} images; raise models.ridge_lambda or models.ridge_images"
            ) from None
        set_projection(self.student, weight.to(self.device), bias.to(self.device))

    # ----------------------------------------------------------------- epochs

    def _epoch_tuples(self, epoch: int) -> EpochTuples:
        """The epoch's tuples (:func:`asymret.mining.epoch_tuples`) or random images; hard
        negatives are mined with the teacher's or the student's vectors, as configured."""
        config = self.config
        mining = config.mining
        readable = self.readable.images
        if mining.sampler == "images":
            generator = epoch_generator(config.run.seed, epoch)
            return self.readable.to_images(sample_images(mining.num_images, len(readable),
                                                         generator))

        def student(indices: torch.Tensor) -> torch.Tensor:
            return self._extract(self.student, self.train_images, readable[indices])

        def teacher(indices: torch.Tensor) -> torch.Tensor:
            return self._bank_rows(readable[indices])

        return self.readable.to_images(epoch_tuples(
            config.run.seed, epoch, self.readable.query_indices, self.readable.positive_indices,
            self.readable.clusters, negatives=mining.negatives, num_pairs=mining.num_pairs,
            pool_size=mining.pool_size, num_negatives=mining.num_negatives,
            query_vectors=teacher if mining.query_vectors == "teacher" else student,
            pool_vectors=teacher if config.loss.similarity == "asymmetric" else student,
            device=self.device, backend=mining.backend,
        ))

    def _needed_images(self, rows: torch.Tensor, tuples: EpochTuples) -> torch.Tensor:
        """Image indices the student must see for tuples ``rows`` of the epoch."""
        queries = tuples.query_indices[rows]
        if self.config.mining.sampler == "images" or (
            not self.config.relational and self.config.loss.similarity == "asymmetric"
        ):
            return queries
        everything = torch.cat(
            [queries[:, None], tuples.positive_indices[rows][:, None],
             tuples.negative_indices[rows]],
            dim=1,
        )
        return everything.reshape(-1) if not self.config.relational else everything.unique()

    def _step_rows(self, tuples: EpochTuples) -> list[torch.Tensor]:
        batch = self.config.optim.batch_size
        steps = []
        for start in range(0, len(tuples), batch):
            rows = torch.arange(start, min(start + batch, len(tuples)))
            steps.append(shard(rows, self.info))
        return steps

    def _step_loss(
        self, rows: torch.Tensor, tuples: EpochTuples, images: list[torch.Tensor | None]
    ) -> tuple[torch.Tensor | None, int]:
        """This rank's loss for tuples ``rows`` and the number of unreadable images dropped."""
        needed = self._needed_images(rows, tuples)
        readable = torch.tensor([image is not None for image in images], dtype=torch.bool)
        skipped = int((~readable).sum())
        if self.config.relational:
            if int(readable.sum()) < 3:
                return None, skipped
            student = self._forward([img for img in images if img is not None])
            inputs = LossInputs(student=student, teacher=self._bank_rows(needed[readable]))
            return self.loss_fn(inputs), skipped
        per_tuple = len(needed) // len(rows)
        keep = readable.view(len(rows), per_tuple).all(dim=1)
        if not keep.any():
            return None, skipped
        kept_images = [
            img for img, ok in zip(images, keep.repeat_interleave(per_tuple), strict=True) if ok
        ]
        rows = rows[keep]
        student = self._forward(kept_images)
        anchors = student[:: per_tuple] if per_tuple > 1 else student
        kinds = self.loss_fn.kinds
        teacher_anchors = (
            self._bank_rows(tuples.query_indices[rows])
            if "self" in self.config.loss.positives or kinds - {"tuple"}
            else None
        )
        inputs = LossInputs(anchor=anchors, student=anchors, teacher=teacher_anchors,
                            teacher_anchor=teacher_anchors)
        if "tuple" in kinds:
            inputs.refs, inputs.positive = self._tuple_refs(rows, tuples, student, per_tuple,
                                                            teacher_anchors)
        if "neighbour" in kinds:
            inputs.neighbours = self._bank_rows(self.neighbours[tuples.query_indices[rows]])
        return self.loss_fn(inputs), skipped

    def _tuple_refs(
        self, rows: torch.Tensor, tuples: EpochTuples, student: torch.Tensor, per_tuple: int,
        teacher_anchors: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A tuple loss's (B, K, D) references and (B, K) positive mask for tuples ``rows``."""
        k = tuples.negative_indices.shape[1]
        if self.config.loss.similarity == "asymmetric":
            positives = self._bank_rows(tuples.positive_indices[rows])
            negatives = self._bank_rows(tuples.negative_indices[rows])
        else:
            grouped = student.view(len(rows), per_tuple, -1)
            positives, negatives = grouped[:, 1], grouped[:, 2 : 2 + k]
        self_vectors = teacher_anchors if "self" in self.config.loss.positives else None
        return tuple_references(positives, negatives, self.config.loss.positives, self_vectors)

    def _forward(self, images: list[torch.Tensor]) -> torch.Tensor:
        on_device = [image.to(self.device, non_blocking=True) for image in images]
        vectors = forward_by_size(
            self.model, on_device, amp=self.amp, channels_last=self.channels_last
        )
        if not torch.isfinite(vectors).all():
            raise TrainingDiverged("the student's vectors are NaN/Inf")
        return vectors

    # ------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, state: TrainState) -> None:
        """Write the checkpoint, the activation cache first: an entry's rounding depends on
        the batch that computed it, so a resumed run must find the entries it had."""
        if self.info.is_main:
            if self.activation_cache is not None:
                self.activation_cache.save()
            save_checkpoint(
                self.checkpoint_path, state, self.student, self.optimizer, self.scheduler
            )

    def _load_checkpoint(self) -> TrainState:
        return load_checkpoint(
            self.checkpoint_path, self.student, self.optimizer, self.scheduler, self.device
        )

    # ------------------------------------------------------------- validation

    def _val_dataset(self, name: str) -> RevisitopDataset:
        """A validation set (a test set's name or a photo folder), with queries and database."""
        dataset = load_test_set(name, self.config.data.root)
        if not dataset.qimlist or not dataset.imlist:
            raise AsymretError(
                f"validation set {name}: {len(dataset.qimlist)} queries and "
                f"{len(dataset.imlist)} database images; validation needs both (a photo "
                "folder: rows with role query and rows with role database)"
            )
        return dataset

    def _teacher_val_vectors(self, dataset: RevisitopDataset) -> tuple[np.ndarray, np.ndarray]:
        """The teacher's (Q, D) query and (N, D) database vectors of a validation set."""
        queries, database = self._main_rank_first(lambda: self.teacher_bank.test_vectors(
            dataset, self.config.data.teacher_val_imsize
        ))
        return queries.vectors, database.vectors

    def validate(self, epoch: int) -> list[dict]:
        """Revisited mAP on each validation set: symmetric, asymmetric and the teacher's."""
        rows = []
        config = self.config
        for name, dataset in self.val_datasets:
            draft = config.data.draft_decode
            query_images = dataset.query_images(config.data.val_imsize).drafted(draft)
            database_images = dataset.database_images(config.data.val_imsize).drafted(draft)
            student_q = self._extract(self.student, query_images, torch.arange(len(query_images)))
            student_x = self._extract(
                self.student, database_images, torch.arange(len(database_images))
            )
            vectors = {"student": (student_q.cpu().numpy(), student_x.cpu().numpy())}
            if self.teacher is not None:
                vectors["teacher"] = self._teacher_val_vectors(dataset)
            for setting, (query_side, database_side) in available_settings(vectors).items():
                result = evaluate_retrieval(
                    np.asarray(vectors[query_side][0]), np.asarray(vectors[database_side][1]),
                    dataset.gnd,
                )
                rows.append({"epoch": epoch, "dataset": name, "setting": setting,
                             **{f"map_{p}": v for p, v in result.map.items()}})
        if self.info.is_main:
            write_validation(self.run_dir / VALIDATION_LOG_NAME, epoch, rows)
            for row in rows:
                print(
                    f"epoch {epoch} {row['dataset']} {row['setting']:>10s}: mAP "
                    f"E {row['map_easy']:.2f}  M {row['map_medium']:.2f}  H {row['map_hard']:.2f}"
                )
        return rows

    # ------------------------------------------------------------------- loop

    def _train_mode(self) -> None:
        self.student.train()
        if self.config.optim.freeze_batchnorm:
            set_batchnorm_eval(self.student)

    def run(self) -> Path:
        """Train to the last epoch (or continue a killed run); return the student's folder."""
        self._prepare_run_dir()
        self._build()
        self._check_inputs()
        config = self.config
        state = self._load_checkpoint() if self.resume else TrainState()
        if self.resume:
            self._apply_resumed_lr()
        else:
            self._init_projection()
            self._save_checkpoint(state)
        log = TrainLog(self.run_dir, enabled=self.info.is_main)
        if self.resume:
            log.resume_at(state.epoch, state.step, state.validated)
        student_dir = self.run_dir / "student"
        while True:
            if state.epoch >= config.optim.epochs:  # kept before the final validation runs
                self._save_student(student_dir)
            if state.validated < state.epoch and self._validation_due(state.epoch):
                log.validated(state.epoch, self.validate(state.epoch))
                state.validated = state.epoch
                self._save_checkpoint(state)
            if state.epoch >= config.optim.epochs:
                break
            if state.tuples is None:
                state.tuples = self._epoch_tuples(state.epoch)
                state.step = 0
                self._save_checkpoint(state)
            self._run_epoch(state, log)
            self.scheduler.step()
            state = TrainState(state.epoch + 1, 0, None, state.skipped_images, state.validated)
            self._save_checkpoint(state)
        if self.info.is_main and state.skipped_images:
            print(f"skipped {state.skipped_images} unreadable training images")
        log.close()
        return student_dir

    def _save_student(self, student_dir: Path) -> None:
        """Write the trained student (and the teacher its queries match) to ``student_dir``."""
        if self.info.is_main:
            save_model(self.student, student_dir)
            if self.teacher is not None:
                write_teacher_record(student_dir, self.config.models.teacher, self.teacher)

    def _check_inputs(self) -> None:
        """Before the first step, read what later stages need, so that none fails after
        training: every validation image's header, the teacher's validation vectors, and
        (``data.skip_unreadable``) which training images are readable."""
        for name, dataset in self.val_datasets:
            check_headers([*map(dataset.image_path, dataset.qimlist),
                           *map(dataset.image_path, dataset.imlist)], f"validation set {name}")
            if self.teacher is not None:
                self._teacher_val_vectors(dataset)
        if self.info.is_main and self.readable.excluded:
            print(f"data.skip_unreadable: {self.readable.excluded} unreadable training images "
                  "left out of every pair, pool and reference", flush=True)

    @functools.cached_property
    def readable(self) -> ReadableImages:
        """The training images epochs are drawn from: all but the unreadable ones."""
        return ReadableImages.of(self.db, self._unreadable_images())

    def _unreadable_images(self) -> np.ndarray:
        """(N,) bool: training images that cannot be read. With a teacher, the rows its
        bank could not fill (NaN); without, a decoding pass over the images. Without
        ``data.skip_unreadable`` all False: an unreadable image stops the run, the bank's
        extraction or (without a teacher) a header check of every image finding it here."""
        if not self.config.data.skip_unreadable:
            if self.bank is None:
                check_headers(self.db.paths, f"training db {self.config.data.train_db}")
            return np.zeros(len(self.db), dtype=bool)
        if self.bank is not None:
            chunk = 4096
            return ~np.concatenate([np.isfinite(self.bank[start:start + chunk]).all(axis=1)
                                    for start in range(0, len(self.db), chunk)])
        loader = DataLoader(self.train_images, batch_size=None, collate_fn=_is_unreadable,
                            num_workers=self.config.run.num_workers)
        return np.array(list(loader), dtype=bool)

    def _validation_due(self, epoch: int) -> bool:
        """Validate after epoch ``epoch`` (1-based count of finished epochs)?"""
        every = self.config.run.val_every
        last = epoch == self.config.optim.epochs
        return bool(self.config.data.val_sets) and epoch > 0 and (
            last or (every > 0 and epoch % every == 0)
        )

    def _run_epoch(self, state: TrainState, log: TrainLog) -> None:
        config = self.config
        steps = self._step_rows(state.tuples)
        step_images = [self._needed_images(rows, state.tuples) for rows in steps]
        loader = DataLoader(
            StepImages(self.train_images, step_images),
            sampler=list(range(state.step, len(steps))),
            batch_size=None,
            num_workers=config.run.num_workers,
        )
        self._train_mode()
        bar = tqdm(
            total=len(steps), initial=state.step, desc=f"epoch {state.epoch + 1}",
            unit="step", disable=not self._progress,
        )
        losses: list[float] = []
        epoch_started = time.perf_counter()
        for images in loader:
            step = state.step
            torch.manual_seed(step_seed(config.run.seed, state.epoch, step))
            started = time.perf_counter()
            try:
                loss, skipped = self._step_loss(steps[step], state.tuples, images)
            except TrainingDiverged as exc:
                raise self._diverged(state, str(exc)) from None
            state.skipped_images += int(sum_across_ranks(torch.tensor(skipped), self.info))
            self.optimizer.zero_grad(set_to_none=True)
            if loss is None:
                loss = sum(p.sum() * 0.0 for p in self.student.parameters())
            (loss * self.info.world_size).backward()
            total = float(sum_across_ranks(loss.detach(), self.info))
            if not math.isfinite(total):
                raise self._diverged(state, f"loss is {total}")
            self.optimizer.step()
            state.step += 1
            log.step(
                epoch=state.epoch + 1, step=state.step,
                global_step=state.epoch * len(steps) + state.step, loss=total,
                lr=self.optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - started,
            )
            bar.set_postfix(loss=f"{total:.4f}")
            bar.update(1)
            losses.append(total)
            if state.step % config.run.checkpoint_every == 0 and state.step < len(steps):
                self._save_checkpoint(state)
        bar.close()
        if self.info.is_main and not config.run.progress:
            print(f"epoch {state.epoch + 1}/{config.optim.epochs}: {len(losses)} steps, mean "
                  f"loss {sum(losses) / max(len(losses), 1):.4f}, lr "
                  f"{self.optimizer.param_groups[0]['lr']:.3g}, "
                  f"{time.perf_counter() - epoch_started:.0f} s", flush=True)

    def _diverged(self, state: TrainState, reason: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"training diverged at epoch {state.epoch + 1}, step {state.step + 1}: {reason}; "
            f"the last good checkpoint is kept at {self.checkpoint_path}; continue from it at a "
            f"lower rate with the same command plus --resume optim.lr="
            f"{self.config.optim.lr / 10:g} (a resume accepts a new optim.lr)"
        )


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Run a training configuration; returns the folder of the trained student."""
    trainer = Trainer(config, resume=resume)
    try:
        return trainer.run()
    finally:
        shutdown(trainer.info)  # gloo's threads must not outlive the interpreter's exit
