"""Command line: ``asymret <subcommand> ...``.

User errors (bad files, shapes, names) print one line and exit with status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asymret.errors import AsymretError
from asymret.runtime import tune_cpu_allocator

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _json_ready(value: Any) -> Any:
    """``value`` with every NaN or infinite number (Python or NumPy) as ``None``: JSON has no
    NaN, and a mAP without positive queries is NaN."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    if isinstance(value, numbers.Integral):  # NumPy integers register as Integral
        return int(value)
    return float(value) if math.isfinite(value) else None


def print_json(value: Any) -> None:
    """Print ``value`` as one line of strict JSON (NaN and infinities as ``null``); every
    ``--json`` output goes through here."""
    print(json.dumps(_json_ready(value), allow_nan=False))


def _add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    summary: str,
    example: str,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def _cmd_evaluate_features(args: argparse.Namespace) -> int:
    from asymret.feature_files import evaluate_feature_files

    result = evaluate_feature_files(args.gnd, args.queries, args.database)
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.format_table())
    return 0


def _describe_model(spec: str) -> str:
    from asymret.models import parse_model_name

    if Path(spec).exists():
        return "saved network"
    config = parse_model_name(spec)
    parts = [f"trunk {config.arch}"]
    if config.head == "conv":
        parts.append(f"1x1 conv + ReLU to {config.dim}")
    parts.append({"gem": "GeM", "mac": "MAC", "spoc": "SPoC"}.get(config.pooling, config.pooling))
    if config.linear_dim:
        parts.append(f"linear to {config.linear_dim}")
    return ", ".join(parts)


def _cmd_models(args: argparse.Namespace) -> int:
    from asymret.models import list_models, model_complexity

    height, width = args.size
    if height < 1 or width < 1:
        raise AsymretError(f"--size must be two positive numbers, got {height} {width}")
    names = args.names or list_models()
    rows = [(name, _describe_model(name), model_complexity(name, (height, width)))
            for name in names]
    width_name = max(34, *(len(name) for name in names))
    print(f"{'network':{width_name}s} {'params':>8s} {'GFLOPs':>7s}  layout")
    for name, description, complexity in rows:
        print(f"{name:{width_name}s} {complexity.mparams:7.2f}M {complexity.gflops:7.2f}  "
              f"{description}")
    print(f"\nGFLOPs of one {height}x{width} image: 2 x multiply-accumulates of convolutions and "
          "matrix products (the reference's ptflops also counts BatchNorm and activations, "
          "about 1% more).")
    if not args.names:
        print("Any timm architecture works as <arch>[-conv<dim>]-<gem|mac|spoc>[-<dim>].")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from asymret.data.download import download

    path = download(args.name, root=args.root, mirror=args.mirror, progress=not args.quiet)
    print(path)
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from asymret.data.folder import PhotoFolder

    folder = PhotoFolder.load(args.directory, strict=False)
    problems = folder.problems + folder.find_unreadable()
    print(folder.summary())
    for problem in problems:
        print(f"  problem: {problem}")
    if problems:
        raise AsymretError(f"{args.directory}: {len(problems)} problem(s) listed above")
    print("all images readable")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from asymret.data.synth import generate_synth

    out = generate_synth(Path(args.out), seed=args.seed, size=args.size,
                         overwrite=args.overwrite, progress=not args.quiet)
    print(out)
    return 0


def _add_extraction_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="(query-side) network: saved model folder, reference .pth, or name")
    parser.add_argument("--pretrained", action="store_true",
                        help="networks given by name: offline ImageNet weights")
    parser.add_argument("--dataset", required=True,
                        help="test set under the data root (roxford5k, synth, ...) or a photo "
                        "folder with images.csv")
    parser.add_argument("--root", help="data root (default: $ASYMRET_DATA or ~/.cache/asymret)")
    parser.add_argument("--imsize", type=_positive_int, default=1024,
                        help="longer image side (default: 1024)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0],
                        help="multi-scale extraction, e.g. 1 0.7071 0.5 (default: 1)")
    parser.add_argument("--distractors", action="store_true",
                        help="add the R1M distractors to the database")
    _add_compute_options(parser)
    parser.add_argument("--verify", choices=("size", "sample", "full"), default="sample",
                        help="how much of each stored feature store to check before it is "
                        "reused: its size, also the sha256 of 64 sampled rows (default), or "
                        "every byte (full)")
    _add_precision_option(parser)


def _add_compute_options(parser: argparse.ArgumentParser) -> None:
    """Where and how extraction runs: ``--device``, ``--batch-size``, ``--workers``."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=_positive_int, default=32,
                        help="images per forward pass")
    parser.add_argument("--workers", type=_count, default=0, help="image-decoding processes")


def _add_precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="extraction precision: fp32 (default, as published) or bf16 "
                        "autocast (faster on GPUs; see benchmarks/precision.py)")


def _extract_options(args: argparse.Namespace) -> dict:
    return dict(device=_checked_device(args.device), batch_size=args.batch_size,
                num_workers=args.workers, amp=args.precision == "bf16")


def _checked_device(name: str) -> str:
    """``--device`` as given, once this machine is known to have it."""
    from asymret.runtime import check_device

    try:
        check_device(name)
    except AsymretError as exc:
        raise AsymretError(f"--device {name}: {exc}") from None
    return name


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (an image side, a batch size)."""
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _count(text: str) -> int:
    """An argparse type: a whole number of at least 0 (worker processes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _cmd_extract(args: argparse.Namespace) -> int:
    from asymret.bank import extract_test_set
    from asymret.data import load_test_set
    from asymret.data.revisitop import distractor_paths
    from asymret.models import load_network

    net = load_network(args.model, args.root, pretrained=args.pretrained)
    dataset = load_test_set(args.dataset, args.root)
    distractors = distractor_paths(args.root) if args.distractors else []
    queries, database = extract_test_set(
        net, dataset, args.out, imsize=args.imsize, scales=args.scales, distractors=distractors,
        verify=args.verify, **_extract_options(args),
    )
    print(f"queries: {queries.path / 'vectors.npy'} ({queries.count} x {queries.dim})")
    print(f"database: {database.path / 'vectors.npy'} ({database.count} x {database.dim})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from asymret.data import load_test_set
    from asymret.evaluate import SETTINGS
    from asymret.models import load_network
    from asymret.retrieval import evaluate_networks

    student = load_network(args.model, args.root, pretrained=args.pretrained)
    teacher = (
        load_network(args.teacher, args.root, pretrained=args.pretrained) if args.teacher else None
    )
    dataset = load_test_set(args.dataset, args.root)
    results = evaluate_networks(dataset, student, teacher, args.features,
                                whitening=args.whitening, root=args.root, imsize=args.imsize,
                                teacher_imsize=args.teacher_imsize,
                                scales=args.scales, with_distractors=args.distractors,
                                verify=args.verify, **_extract_options(args))
    if args.json:
        print_json(results.to_dict())
        return 0
    for setting, result in results.items():
        whitening = results.whitening_of(setting)
        if whitening is None:
            print(f"{dataset.name}, {setting}:\n{result.format_table()}\n")
            continue
        side = SETTINGS[setting][1]
        print(f"{dataset.name}, {setting}, without whitening:\n"
              f"{results.raw[setting].format_table()}\n")
        print(f"{dataset.name}, {setting} + whitening (the {side}'s, {whitening.detail}):\n"
              f"{result.format_table()}\n")
    return 0


def _cmd_whiten(args: argparse.Namespace) -> int:
    from asymret.retrieval import whiten_model

    _, result = whiten_model(
        args.model, args.db, args.out, args.features, root=args.root, dim=args.dim,
        split=args.split, imsize=args.imsize, scales=args.scales,
        device=_checked_device(args.device),
        batch_size=args.batch_size, num_workers=args.workers, amp=args.precision == "bf16",
    )
    print(f"whitened model saved in {args.out} ({result.detail})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from asymret.export import export_onnx

    meta = export_onnx(args.model, args.out, teacher_fingerprint=args.teacher_fingerprint,
                       root=args.root, pretrained=args.pretrained, opset=args.opset)
    teacher = " ".join(filter(None, (meta["teacher_network"], meta["teacher_fingerprint"])))
    teacher = teacher or "unknown"
    print(f"{meta['network']} ({meta['dim']}-D, {meta['model_fingerprint']}; teacher "
          f"{teacher}) exported to {args.out}; onnxruntime matches PyTorch (lowest cosine "
          f"{meta['cosine']:.6f})")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from asymret.train import load_config, train

    config = load_config(args.config, args.overrides)
    student_dir = train(config, resume=args.resume)
    print(f"student saved in {student_dir}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from asymret.reproduce import format_markdown, reproduce
    from asymret.train.presets import PRESETS_DIR

    table = reproduce(
        args.out, configs_dir=args.configs or PRESETS_DIR, rows=args.rows,
        overrides=args.overrides,
        teacher=args.teacher, datasets=args.datasets, root=args.root, imsize=args.imsize,
        scales=args.scales, whitening=None if args.no_whitening else args.whitening,
        device=args.device, batch_size=args.batch_size, progress=not args.quiet,
    )
    print(format_markdown(table))
    print(f"tables: {Path(args.out) / 'reproduction.csv'} and reproduction.md")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from asymret.demo import run_demo

    plan = "quick" if args.quick else "long" if args.long else "default"
    out = Path(args.out or {"quick": "runs/demo-quick", "long": "runs/demo-long"}.get(
        plan, "runs/demo"))
    try:
        files = run_demo(out, plan)
    except KeyboardInterrupt:
        print(f"asymret: interrupted; everything finished so far is kept in {out} (and its "
              "report); run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"report: {files['html']} (also {files['md'].name} and {files['csv'].name})")
    return 0


_IVFPQ_OPTIONS = ("nlist", "reduce_dim", "pq_m", "nprobe", "rerank", "train_size")


def _describe_index(index) -> str:
    teacher = index.teacher
    size = "full size" if index.imsize is None else f"{index.imsize}px"
    scales = ",".join(f"{s:g}" for s in index.preprocessing["scales"])
    kind = index.kind if index.kind == "exact" else f"ivfpq {index.meta['ivfpq']['factory']}"
    return (f"{index.path}: {index.count} images, {index.dim}-D, {kind}; teacher "
            f"{teacher['name']} {teacher['fingerprint'][:19]} at {size}, scales {scales}, "
            f"{index.preprocessing['precision']}")


def _describe_recall(recall: dict | None) -> str:
    if recall is None:
        return ""
    return (f"\nIVF-PQ recall@{recall['k']} against exact search: {recall['recall']:.3f} "
            f"({recall['queries']} of its {recall['count']} vectors as queries, each query's "
            f"own image left out; nprobe {recall['nprobe']}, rerank {recall['rerank']})")


def _describe_report(report, verb: str) -> str:
    lines = [f"{verb} {report.added} images" + (f" ({report.already} already indexed)"
                                                 if report.already else "")]
    if report.skipped:
        lines.append(f"skipped {len(report.skipped)} unreadable image(s), first "
                     f"{report.skipped[0]}")
    lines.append(_describe_index(report.index) + _describe_recall(report.recall))
    return "\n".join(lines)


def _cmd_index_build(args: argparse.Namespace) -> int:
    from asymret.index import IvfPqOptions, build_index, collection_images
    from asymret.models import load_network

    given = {name: getattr(args, name) for name in _IVFPQ_OPTIONS
             if getattr(args, name) is not None}
    if given and args.kind != "ivfpq":
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise AsymretError(f"{options}: IVF-PQ settings, for --kind ivfpq")
    ids, paths = collection_images(args.images, args.dataset, args.root)
    teacher = load_network(args.teacher, args.root, pretrained=args.pretrained)
    report = build_index(
        args.out, teacher, ids, paths, teacher_spec=args.teacher, pretrained=args.pretrained,
        kind=args.kind, ivfpq=IvfPqOptions(**given), imsize=args.imsize, scales=args.scales,
        recall_queries=args.recall_queries, progress=not args.quiet, **_extract_options(args),
    )
    print(_describe_report(report, "indexed"))
    return 0


def _cmd_index_add(args: argparse.Namespace) -> int:
    from asymret.index import add_to_index, collection_images
    from asymret.models import load_network

    ids, paths = collection_images(args.images, args.dataset, args.root)
    teacher = (load_network(args.teacher, args.root, pretrained=args.pretrained)
               if args.teacher else None)
    report = add_to_index(args.index, ids, paths, teacher=teacher, root=args.root,
                          recall_queries=args.recall_queries, progress=not args.quiet,
                          device=args.device, batch_size=args.batch_size,
                          num_workers=args.workers)
    print(_describe_report(report, "added"))
    return 0


def _cmd_index_retrain(args: argparse.Namespace) -> int:
    from asymret.index import IvfPqOptions, TeacherIndex, retrain_index

    given = {name: getattr(args, name) for name in _IVFPQ_OPTIONS
             if getattr(args, name) is not None}
    options = None
    if given:
        old = TeacherIndex.open(args.index).meta.get("ivfpq") or {}
        kept = {name: old[name] for name in ("nprobe", "rerank") if name in old}
        options = IvfPqOptions(**{**kept, **given})
    report = retrain_index(args.index, options, recall_queries=args.recall_queries)
    print(f"retrained the quantisers on all {report.index.count} vectors\n"
          + _describe_index(report.index) + _describe_recall(report.recall))
    return 0


def _cmd_index_info(args: argparse.Namespace) -> int:
    from asymret.index import TeacherIndex

    index = TeacherIndex.open(args.index, verify=args.verify)
    if args.json:
        print_json(index.meta)
    else:
        print(_describe_index(index) + _describe_recall(index.recall))
    return 0


def _query_model(args: argparse.Namespace):
    """The ``--model`` of search and serve: an ONNX file, or a torch network."""
    from asymret.index import TorchQueryModel

    if str(args.model).endswith(".onnx"):
        from asymret.export import OnnxQueryModel

        if args.scales not in (None, [1.0]):
            raise AsymretError("--scales: an ONNX query model extracts at one scale")
        return OnnxQueryModel(args.model)
    return TorchQueryModel.load(args.model, root=args.root, pretrained=args.pretrained,
                                scales=args.scales or [1.0], device=_checked_device(args.device))


def _cmd_search(args: argparse.Namespace) -> int:
    from asymret.index import parse_box, search_index

    model = _query_model(args)
    results = search_index(
        args.index, model, args.queries, args.k, box=parse_box(args.box) if args.box else None,
        imsize=args.imsize, allow_unknown_teacher=args.allow_unknown_teacher,
        nprobe=args.nprobe, rerank=args.rerank,
    )
    if args.json:
        print_json([
            {"query": str(query), "results": [{"rank": rank, "path": hit.path, "score": hit.score}
                                              for rank, hit in enumerate(hits, start=1)]}
            for query, hits in zip(args.queries, results, strict=True)
        ])
        return 0
    for query, hits in zip(args.queries, results, strict=True):
        print(f"{query}:")
        for rank, hit in enumerate(hits, start=1):
            print(f"{rank:4d}  {hit.score:.4f}  {hit.path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from asymret.index import TeacherIndex
    from asymret.serve import SearchPage, UploadLimits, example_queries, serve

    examples = []
    if args.examples or args.dataset:
        examples = example_queries(args.examples, args.dataset, args.root)
    limits = UploadLimits(max_bytes=round(args.max_upload_mb * 2**20),
                          max_pixels=round(args.max_megapixels * 1e6))
    page = SearchPage(TeacherIndex.open(args.index), _query_model(args), imsize=args.imsize,
                      k=args.k, examples=examples, limits=limits,
                      allow_unknown_teacher=args.allow_unknown_teacher, nprobe=args.nprobe,
                      rerank=args.rerank)
    serve(page, args.port)
    return 0


def _add_index_commands(subparsers: argparse._SubParsersAction) -> None:
    """``asymret index build|add|info`` and ``asymret search``."""
    index = subparsers.add_parser(
        "index", help="index a photo collection with the teacher (faiss), once, then grow it",
        description="index a photo collection with the teacher (faiss), once, then grow it",
        epilog="example:\n  asymret index build --teacher T --images ~/photos --out idx\n"
        "  asymret index add idx --images ~/photos/new\n  asymret index info idx",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    index_commands = index.add_subparsers(dest="index_command", metavar="<index command>",
                                          required=True)

    def add_source(parser: argparse.ArgumentParser) -> None:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--images", metavar="DIR",
                            help="a folder of images (searched recursively)")
        source.add_argument("--dataset", help="a test set's database images: a set under the "
                            "data root (roxford5k, synth, ...) or a photo folder with images.csv")
        parser.add_argument("--root", help="data root (default: $ASYMRET_DATA or "
                            "~/.cache/asymret)")
        parser.add_argument("--pretrained", action="store_true",
                            help="a teacher given by name: offline ImageNet weights")
        _add_compute_options(parser)
        parser.add_argument("--quiet", action="store_true", help="no progress bar")

    def add_ivfpq_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--nlist", type=int, help="ivfpq: inverted lists (default: "
                            "4 sqrt(N) as a power of two)")
        parser.add_argument("--reduce-dim", type=int, help="ivfpq: PCA dimensions before "
                            "quantising (default: min(D, 256))")
        parser.add_argument("--pq-m", type=int,
                            help="ivfpq: 4-bit sub-quantisers (default: reduce-dim / 2)")
        parser.add_argument("--nprobe", type=int, help="ivfpq: lists searched (default: 64)")
        parser.add_argument("--rerank", type=int, help="ivfpq: candidates re-scored exactly "
                            "from the stored vectors (default: 100; 0: approximate scores)")
        parser.add_argument("--train-size", type=int, help="ivfpq: vectors the quantisers "
                            "learn from (default: 39 nlist, at least 10000)")
        parser.add_argument("--recall-queries", type=int, default=1000, help="ivfpq: sampled "
                            "vectors the recall is measured with (default: 1000)")

    build = _add_command(
        index_commands, "build", _cmd_index_build,
        "extract the teacher's vectors of a collection into a new index folder (resumable: "
        "run it again after an interruption)",
        "asymret index build --teacher networks/rSfM120k-tl-resnet101-gem-w-a155e54.pth "
        "--images ~/photos --out runs/photos-index\n"
        "  asymret index build --teacher T --dataset roxford5k --out idx --kind ivfpq",
    )
    build.add_argument("--teacher", required=True,
                       help="the indexing network: saved model folder, reference .pth, or name")
    build.add_argument("--out", required=True, help="the index folder to create")
    add_source(build)
    build.add_argument("--imsize", type=_positive_int, default=1024,
                       help="longer image side the teacher sees (default: 1024)")
    build.add_argument("--scales", type=float, nargs="+", default=[1.0],
                       help="multi-scale extraction, e.g. 1 0.7071 0.5 (default: 1)")
    _add_precision_option(build)
    build.add_argument("--kind", choices=("exact", "ivfpq"), default="exact",
                       help="exact inner-product search (default) or IVF-PQ for large "
                       "collections (its recall@10 against exact is measured and printed)")
    add_ivfpq_options(build)

    add = _add_command(
        index_commands, "add", _cmd_index_add,
        "add the images not yet indexed, with the index's teacher and preprocessing "
        "(resumable)",
        "asymret index add runs/photos-index --images ~/photos/2027",
    )
    add.add_argument("index", help="the index folder")
    add_source(add)
    add.add_argument("--teacher", help="the indexing network, if it moved (default: the one "
                     "the index records; its weights must be the same)")
    add.add_argument("--recall-queries", type=int, default=0,
                     help="ivfpq: measure the recall again with this many sampled vectors")

    retrain = _add_command(
        index_commands, "retrain", _cmd_index_retrain,
        "ivfpq: train the quantisers afresh on the whole collection after it has grown, from "
        "the stored vectors (nothing is extracted again), and measure the recall",
        "asymret index retrain runs/photos-index          # defaults for the new size\n"
        "  asymret index retrain runs/photos-index --nlist 8192",
    )
    retrain.add_argument("index", help="the index folder")
    add_ivfpq_options(retrain)

    info = _add_command(index_commands, "info", _cmd_index_info,
                        "describe an index: size, kind, teacher, preprocessing, recall",
                        "asymret index info runs/photos-index --verify")
    info.add_argument("index", help="the index folder")
    info.add_argument("--verify", action="store_true",
                      help="check every file's sha256 (reads them all)")
    info.add_argument("--json", action="store_true", help="print index.json")

    search = _add_command(
        subparsers, "search", _cmd_search,
        "search a teacher index with query images through a student (or the teacher) and "
        "print the ranked images and scores",
        "asymret search --index runs/photos-index --model runs/s/student q.jpg -k 5 "
        "--box 40,30,380,410\n  asymret search --index runs/photos-index --model student.onnx "
        "q1.jpg q2.jpg --json",
    )
    search.add_argument("queries", nargs="+", metavar="QUERY", help="query image files")
    search.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    search.add_argument("--json", action="store_true",
                        help="print one JSON list: per query its ranked paths and scores")
    search.add_argument("--box", metavar="x1,y1,x2,y2",
                        help="crop every query to this box in pixels (shrunk by its full "
                        "image's factor, as asymret reads a query)")
    _add_query_model_options(search)

    serve = _add_command(
        subparsers, "serve", _cmd_serve,
        "serve a search page on 127.0.0.1: upload or pick a query image, see the index's top "
        "results as a picture grid with scores and the query model's time",
        "asymret serve --index runs/photos-index --model student.onnx --examples ~/queries\n"
        "  asymret serve --index runs/synth-index --model runs/s/student --dataset synth",
    )
    serve.add_argument("--port", type=int, default=8000,
                       help="port on 127.0.0.1 (default: 8000; 0: any free port)")
    serve.add_argument("-k", type=int, default=10, help="results shown (default: 10)")
    examples = serve.add_mutually_exclusive_group()
    examples.add_argument("--examples", metavar="DIR",
                          help="a folder of example queries the page offers to pick")
    examples.add_argument("--dataset", help="offer a test set's queries (with their boxes) to "
                          "pick: a set under the data root or a photo folder with images.csv")
    serve.add_argument("--max-upload-mb", type=float, default=20.0,
                       help="largest upload accepted (default: 20)")
    serve.add_argument("--max-megapixels", type=float, default=40.0,
                       help="largest upload in millions of pixels, checked before decoding "
                       "(default: 40)")
    _add_query_model_options(serve)


def _add_query_model_options(parser: argparse.ArgumentParser) -> None:
    """The options of search and serve: the index and the query model."""
    parser.add_argument("--index", required=True, help="the index folder")
    parser.add_argument("--model", required=True,
                        help="the query network: a student's saved folder (its teacher.json "
                        "must name the index's teacher), an .onnx from `asymret export`, the "
                        "index's teacher, a reference .pth or a name")
    parser.add_argument("--imsize", type=_positive_int,
                        help="longer side of the query images (default: the index's)")
    parser.add_argument("--scales", type=float, nargs="+",
                        help="multi-scale query vectors, torch models only (default: 1)")
    parser.add_argument("--allow-unknown-teacher", action="store_true",
                        help="search with a model that records no teacher (trained alone or "
                        "saved before teacher.json existed): its vectors may not match")
    parser.add_argument("--nprobe", type=int, help="ivfpq: lists searched (default: the "
                        "index's)")
    parser.add_argument("--rerank", type=int, help="ivfpq: candidates re-scored exactly "
                        "(default: the index's)")
    parser.add_argument("--root", help="data root (networks given as networks/<file>.pth)")
    parser.add_argument("--pretrained", action="store_true",
                        help="a network given by name: offline ImageNet weights")
    parser.add_argument("--device", default="cpu", help="where a torch model runs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asymret",
        description="Asymmetric metric learning for image retrieval: students compatible "
        "with a teacher's index.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    demo = _add_command(
        subparsers, "demo", _cmd_demo,
        "the whole method on the embedded benchmark: teacher, students with every loss, "
        "symmetric and asymmetric mAP, the paper's two findings checked, and a report "
        "(offline, about 5 min on 2 CPU cores)",
        "asymret demo              # writes runs/demo/report.html\n"
        "  asymret demo --quick      # a smaller run in about a minute\n"
        "  asymret demo --long       # more epochs, both projection starts, learning curves",
    )
    size = demo.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="smaller benchmark and fewer epochs (default folder runs/demo-quick)")
    size.add_argument("--long", action="store_true",
                      help="more epochs, both projection starts, validation every 2 epochs "
                      "(up to 30 min; default folder runs/demo-long)")
    demo.add_argument("--out", default=None,
                      help="run folder (default: runs/demo); re-running continues it")

    evaluate = _add_command(
        subparsers, "evaluate-features", _cmd_evaluate_features,
        "revisited Oxford/Paris mAP and mP@k of query vectors against database vectors",
        "asymret evaluate-features --gnd gnd_roxford5k.pkl --queries Q.npy --database X.npy",
    )
    evaluate.add_argument("--gnd", required=True, help="ground-truth pickle (revisitop format)")
    evaluate.add_argument("--queries", required=True, help="(nq, D) query vectors, .npy")
    evaluate.add_argument("--database", required=True, help="(n, D) database vectors, .npy")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    from asymret.data.download import DOWNLOADS

    download = _add_command(
        subparsers, "download", _cmd_download,
        "download an official dataset or a reference teacher network (resumable)",
        "asymret download roxford5k --root ~/data/asymret",
    )
    download.add_argument("name", choices=list(DOWNLOADS), metavar="NAME",
                          help="one of: " + ", ".join(DOWNLOADS))
    download.add_argument("--root", help="data root (default: $ASYMRET_DATA or ~/.cache/asymret)")
    download.add_argument("--mirror", help="base URL replacing the official hosts")
    download.add_argument("--quiet", action="store_true", help="no progress bars")

    data = subparsers.add_parser("data", help="prepare and check datasets",
                                 description="prepare and check datasets")
    data_commands = data.add_subparsers(dest="data_command", metavar="<data command>",
                                        required=True)
    check = _add_command(
        data_commands, "check", _cmd_data_check,
        "validate a photo folder (images.csv + images) and name every bad image",
        "asymret data check ~/photos/my-landmarks",
    )
    check.add_argument("directory", help="folder holding images.csv")
    synth = _add_command(
        data_commands, "synth", _cmd_data_synth,
        "generate the embedded synthetic-landmark benchmark in the official formats",
        "asymret data synth --out ~/.cache/asymret --seed 0 --size default",
    )
    synth.add_argument("--out", required=True, help="output folder (the data root to use)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument("--size", choices=("small", "default", "large"), default="default")
    synth.add_argument("--overwrite", action="store_true",
                       help="replace an existing synth/ and retrieval-synth/")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")

    extract = _add_command(
        subparsers, "extract", _cmd_extract,
        "extract query and database vectors of a test set into resumable feature stores",
        "asymret extract --model runs/student/student --dataset roxford5k --out feats/rox "
        "--scales 1 0.7071 0.5",
    )
    extract.add_argument("--out", required=True, help="folder for queries/ and database/")
    _add_extraction_options(extract)

    evaluate_models = _add_command(
        subparsers, "evaluate", _cmd_evaluate,
        "extract and evaluate a student, symmetric and (with --teacher) asymmetric",
        "asymret evaluate --model runs/s/student --teacher networks/rSfM120k-tl-resnet101-gem-w-"
        "a155e54.pth --dataset roxford5k",
    )
    evaluate_models.add_argument("--teacher", help="database-side network for the asymmetric test")
    evaluate_models.add_argument("--teacher-imsize", type=_positive_int,
                                 help="longer image side the teacher sees (default: --imsize)")
    evaluate_models.add_argument("--features", default="runs/features",
                                 help="feature-store cache (default: runs/features)")
    evaluate_models.add_argument("--whitening", metavar="DB",
                                 help="learned whitening, as published: a whitening db "
                                 "(retrieval-SfM-120k, retrieval-SfM-30k, a *-whiten.pkl), a "
                                 "training db or a photo folder; learned on each setting's "
                                 "database-side network (or taken from its reference "
                                 "checkpoint's meta['Lw']) and applied to queries and database")
    evaluate_models.add_argument("--json", action="store_true",
                                 help="print one JSON object, one entry per setting (with "
                                 "--whitening: whitened results, their 'whitening' and "
                                 "'without_whitening')")
    _add_extraction_options(evaluate_models)

    whiten = _add_command(
        subparsers, "whiten", _cmd_whiten,
        "learn whitening from a training db's matching pairs and save the whitened model",
        "asymret whiten --model networks/retrievalSfM120k-resnet101-gem-b80fb85.pth "
        "--db retrieval-SfM-120k --out runs/rn101-whitened",
    )
    whiten.add_argument("--model", required=True, help="network without a projection layer")
    whiten.add_argument("--db", default="retrieval-SfM-120k",
                        help="whitening db (retrieval-SfM-120k, retrieval-SfM-30k, a "
                        "*-whiten.pkl), SfM-format training db or photo folder (default: "
                        "retrieval-SfM-120k)")
    whiten.add_argument("--split", default="val",
                        help="split of a training db with the pairs (default: val)")
    whiten.add_argument("--dim", type=int, help="keep this many whitened dimensions")
    whiten.add_argument("--imsize", type=_positive_int, default=1024, help="longer image side")
    whiten.add_argument("--scales", type=float, nargs="+", default=[1.0],
                        help="extraction scales (default: 1; the folded network equals "
                        "post-hoc whitening at a single scale)")
    whiten.add_argument("--root", help="data root")
    whiten.add_argument("--device", default="cpu")
    whiten.add_argument("--batch-size", type=_positive_int, default=32,
                        help="images per forward pass")
    whiten.add_argument("--workers", type=_count, default=0, help="image-decoding processes")
    _add_precision_option(whiten)
    whiten.add_argument("--features", default="runs/features",
                        help="feature-store cache, shared with evaluate (default: runs/features)")
    whiten.add_argument("--out", required=True, help="folder of the whitened model")

    export = _add_command(
        subparsers, "export", _cmd_export,
        "export a network as ONNX for querying without PyTorch: (N, 3, H, W) RGB in [0, 1], "
        "any batch and image size, to (N, D) unit vectors; its and its teacher's fingerprints "
        "in the metadata",
        "asymret export --model runs/synth-contrastive-plus/student --out student.onnx",
    )
    export.add_argument("--model", required=True,
                        help="saved model folder (e.g. a trained student), reference .pth, or name")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--teacher-fingerprint", metavar="SHA256",
                        help="the teacher the vectors are compatible with (default: from the "
                        "student folder's teacher.json, else none)")
    export.add_argument("--pretrained", action="store_true",
                        help="networks given by name: offline ImageNet weights")
    export.add_argument("--root", help="data root (for networks/<file>.pth)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")

    train = _add_command(
        subparsers, "train", _cmd_train,
        "train a student against a frozen teacher (any loss, symmetric or asymmetric)",
        "asymret train --config asym-contrastive-plus optim.epochs=10 "
        "run.device=cuda\n  torchrun --nproc_per_node=4 -m asymret train --config ...",
    )
    train.add_argument("--config", help="YAML file of settings, or a preset by name (e.g. "
                       "asym-contrastive-plus; see src/asymret/presets/); defaults otherwise")
    train.add_argument("overrides", nargs="*", metavar="section.key=value",
                       help="settings that override the file, e.g. optim.lr=1e-5")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in run.out from its last checkpoint")

    reproduce = _add_command(
        subparsers, "reproduce", _cmd_reproduce,
        "train the paper's rows with the presets, test them as published and print ours beside "
        "the published table",
        "asymret reproduce --root ~/data/asymret --device cuda data.root=~/data/asymret "
        "run.device=cuda models.pretrained_path=tf_efficientnet_b3.safetensors",
    )
    reproduce.add_argument("overrides", nargs="*", metavar="section.key=value",
                           help="training settings applied to every preset")
    reproduce.add_argument("--out", default="runs/reproduce",
                           help="runs, feature stores and tables (default: runs/reproduce)")
    reproduce.add_argument("--configs", help="folder of the presets (default: the shipped ones)")
    reproduce.add_argument("--rows", nargs="+", metavar="PRESET",
                           help="only these rows (preset names, or 'teacher')")
    reproduce.add_argument("--teacher", help="teacher of every row (default: the presets')")
    reproduce.add_argument("--datasets", nargs="+", default=["roxford5k", "rparis6k"],
                           help="test sets (default: roxford5k rparis6k)")
    reproduce.add_argument("--root", help="data root of the test sets and the whitening db")
    reproduce.add_argument("--imsize", type=_positive_int, default=1024, help="test image size")
    reproduce.add_argument("--scales", type=float, nargs="+", default=[1.0, 1 / math.sqrt(2), 0.5],
                           help="test scales (default: 1 1/sqrt(2) 1/2, as published)")
    reproduce.add_argument("--whitening", default="retrieval-SfM-120k",
                           help="whitening db, learned on the database side (default: "
                           "retrieval-SfM-120k, as published)")
    reproduce.add_argument("--no-whitening", action="store_true", help="test without whitening")
    reproduce.add_argument("--device", default="cpu", help="device of the tests")
    reproduce.add_argument("--batch-size", type=_positive_int, default=32,
                           help="test images per batch")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars")

    models = _add_command(
        subparsers, "models", _cmd_models,
        "list the documented networks with their parameters and GFLOPs",
        "asymret models\n  asymret models tf_efficientnet_b3-conv2048-gem tf_efficientnet_b3-gem "
        "--size 1024 768",
    )
    models.add_argument("names", nargs="*", metavar="NAME",
                        help="networks to report (names or saved model folders; default: the "
                             "documented ones)")
    models.add_argument("--size", type=int, nargs=2, default=[362, 362], metavar=("H", "W"),
                        help="input image size for the FLOPs (default: 362 362, as the "
                             "reference project measured); counted on the meta device, in "
                             "about 0.1 s per network")
    _add_index_commands(subparsers)
    return parser


def _parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``, taking ``section.key=value`` overrides wherever they stand among a
    command's options (argparse fills a ``*`` positional once, from the first run of them)."""
    args, extra = parser.parse_known_args(argv)
    stray = [arg for arg in extra if arg.startswith("-") or "=" not in arg]
    if extra and (stray or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asymret`` console script; returns the exit status."""
    parser = build_parser()
    args = _parse_args(parser, argv)
    tune_cpu_allocator()
    try:
        return args.handler(args)
    except AsymretError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"asymret: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("asymret: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
        return 0
