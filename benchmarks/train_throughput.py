"""Training-step throughput: asymret's batched step vs the reference one-tuple-at-a-time loop.

Both sides do the same work on the same images: a student (GeM + projection to the
teacher's dimension) trained with asymmetric Contr⁺ on tuples (query, positive, 5 negatives),
the teacher's vectors precomputed. The reference re-creates cirtorch/AML training: every
tuple on its own, each image through the network at batch size 1 in fp32, one backward per
tuple, one optimiser step per batch. asymret runs the batch's images through the student as
one batch (channels-last; bf16 autocast on CUDA), takes one backward and updates with the
Trainer's fused Adam (the reference: PyTorch's default Adam). As the ``asymret``
command does, the script first lets glibc keep large freed blocks
(:func:`asymret.runtime.tune_cpu_allocator`; process-wide, so both sides run under it);
``--default-allocator`` leaves malloc as it is.

Two settings are measured: asymmetric (the student sees the B anchors only; the references
are teacher vectors) and symmetric (the student sees all 7 images of every tuple). Images/s
counts the images the student processes. The script also checks that the two sides compute
the same loss (fp32, same weights) before timing.

With ``--trainable-stages N`` a third row times partial fine-tuning (``optim.trainable_stages``):
asymmetric, only the trunk's last N stages trained, the frozen stages' activations read from
the activation cache (filled by the warm-up step, as after a run's first epoch). That is less
work than the reference does, so it is reported beside the equal-work rows, not instead of them.

Run from the repository root::

    .venv/bin/python benchmarks/train_throughput.py                 # CPU, small default
    .venv/bin/python benchmarks/train_throughput.py --device cuda \\
        --model efficientnet_b3-gem-2048 --size 362 272 --batch 128 --steps 5
"""

from __future__ import annotations

import argparse
import math
from functools import partial

import torch

from asymret.losses import build_loss
from asymret.models import ActivationCache, create_model
from asymret.train.loop import make_optimizer, set_batchnorm_eval
from asymret.train.steps import forward_by_size, tuple_references
from bench_setup import add_machine_options, set_up_machine, timed_call

NEGATIVES = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv2_100-gem-512")
    parser.add_argument("--size", type=int, nargs=2, default=(160, 120), metavar=("W", "H"))
    parser.add_argument("--batch", type=int, default=16, help="tuples per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method and round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of both methods; the best round of each counts")
    parser.add_argument("--trainable-stages", type=int, default=0,
                        help="also time partial fine-tuning of the last N stages (cached)")
    add_machine_options(parser)
    return parser.parse_args()


def reference_step(student, optimizer, loss_fn, tuples, teacher) -> float:
    """cirtorch/AML style: per tuple, each image alone (batch 1, fp32), backward per tuple."""
    optimizer.zero_grad()
    total = 0.0
    for images, positive, negatives, g_anchor in tuples:
        vectors = torch.cat([student(image[None]) for image in images])
        anchors = vectors[:1]
        if teacher:
            pos, neg = positive[None], negatives[None]
        else:
            pos, neg = vectors[1:2], vectors[2:][None]
        refs, mask = tuple_references(pos, neg, "pair+self", g_anchor[None])
        loss = loss_fn(anchors, refs, mask)
        loss.backward()
        total += loss.item()
    optimizer.step()
    return total


def batched_step(student, optimizer, loss_fn, tuples, teacher, amp, channels_last) -> float:
    """asymret: all images of the step through the student at once, one backward."""
    optimizer.zero_grad()
    images = [image for item in tuples for image in item[0]]
    vectors = forward_by_size(student, images, amp=amp, channels_last=channels_last)
    per_tuple = len(tuples[0][0])
    anchors = vectors[::per_tuple]
    g_anchor = torch.stack([item[3] for item in tuples])
    if teacher:
        pos = torch.stack([item[1] for item in tuples])
        neg = torch.stack([item[2] for item in tuples])
    else:
        grouped = vectors.view(len(tuples), per_tuple, -1)
        pos, neg = grouped[:, 1], grouped[:, 2:]
    refs, mask = tuple_references(pos, neg, "pair+self", g_anchor)
    loss = loss_fn(anchors, refs, mask)
    loss.backward()
    optimizer.step()
    return loss.item()


def make_tuples(args, dim, device, asymmetric):
    width, height = args.size
    generator = torch.Generator().manual_seed(0)
    images_per_tuple = 1 if asymmetric else 2 + NEGATIVES
    tuples = []
    for _ in range(args.batch):
        images = [torch.rand(3, height, width, generator=generator).to(device)
                  for _ in range(images_per_tuple)]
        teacher = torch.nn.functional.normalize(torch.randn(2 + NEGATIVES, dim), dim=1).to(device)
        tuples.append((images, teacher[1], teacher[2:], teacher[0]))
    return tuples


def best_times(args, device, *methods) -> list[float]:
    """Seconds per step of each (memory format, step function), the best of ``args.rounds``
    rounds that alternate between the methods (so that a noisy moment hits all of them)."""
    best = [math.inf] * len(methods)
    for _ in range(args.rounds):
        for index, (student, memory_format, function) in enumerate(methods):
            student.to(memory_format=memory_format)
            best[index] = min(best[index], timed(function, args.steps, device))
    return best


def timed(function, steps, device) -> float:
    """Seconds per call of ``function``, over ``steps`` calls after one warm-up call."""
    function()
    seconds, _ = timed_call(lambda: [function() for _ in range(steps)], device)
    return seconds / steps


def main() -> None:
    args = parse_args()
    device = set_up_machine(args)
    cuda = device.type == "cuda"
    loss_fn = build_loss("contrastive", margin=0.7)
    print(f"model {args.model}, images {args.size[0]}x{args.size[1]}, {args.batch} tuples/step, "
          f"{NEGATIVES} negatives")
    rows = []
    for asymmetric in (True, False):
        torch.manual_seed(0)
        student = create_model(args.model).to(device)
        student.train()
        set_batchnorm_eval(student)
        reference_optimizer = torch.optim.Adam(student.parameters(), lr=0.0)
        optimizer = make_optimizer(student, 0.0, 0.0, device)
        tuples = make_tuples(args, student.outputdim, device, asymmetric)
        reference_args = (student, reference_optimizer, loss_fn, tuples, asymmetric)
        step_args = (student, optimizer, loss_fn, tuples, asymmetric)
        reference_loss = reference_step(*reference_args)
        batched_loss = batched_step(*step_args, False, False)
        assert abs(reference_loss - batched_loss) <= 1e-3 * max(1.0, abs(reference_loss)), (
            reference_loss, batched_loss)
        images = args.batch * len(tuples[0][0])
        reference_s, batched_s = best_times(
            args, device,
            (student, torch.contiguous_format, partial(reference_step, *reference_args)),
            (student, torch.channels_last, partial(batched_step, *step_args, cuda, True)),
        )
        rows.append(("asymmetric" if asymmetric else "symmetric", images,
                     images / reference_s, images / batched_s))
    if args.trainable_stages:
        rows.append(partial_finetuning_row(args, device, loss_fn))
    print(f"\n{'setting':12s} {'images/step':>11s} {'reference img/s':>16s} "
          f"{'asymret img/s':>14s} {'speed-up':>9s}")
    for setting, images, reference, ours in rows:
        print(f"{setting:12s} {images:11d} {reference:16.1f} {ours:14.1f} {ours / reference:8.1f}x")
    if args.trainable_stages:
        print(f"(asym-last{args.trainable_stages}: only the last {args.trainable_stages} trunk "
              "stage(s) trained, frozen activations cached; its reference is the full network)")


def partial_finetuning_row(args, device, loss_fn) -> tuple[str, int, float, float]:
    """Asymmetric step of a student whose last stages train on cached activations, against
    the full-network reference loop on the same tuples."""
    torch.manual_seed(0)
    student = create_model(args.model).to(device)
    student.train()
    set_batchnorm_eval(student)
    tuples = make_tuples(args, student.outputdim, device, asymmetric=True)
    reference = create_model(args.model).to(device)
    reference.load_state_dict(student.state_dict())
    set_batchnorm_eval(reference.train())
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=0.0)
    student.freeze_trunk(args.trainable_stages, ActivationCache())
    set_batchnorm_eval(student.train())
    optimizer = make_optimizer(student, 0.0, 0.0, device)
    cuda = device.type == "cuda"
    reference_s, partial_s = best_times(
        args, device,
        (reference, torch.contiguous_format,
         partial(reference_step, reference, reference_optimizer, loss_fn, tuples, True)),
        (student, torch.channels_last,
         partial(batched_step, student, optimizer, loss_fn, tuples, True, cuda, True)),
    )
    return f"asym-last{args.trainable_stages}", args.batch, args.batch / reference_s, (
        args.batch / partial_s)


if __name__ == "__main__":
    main()
