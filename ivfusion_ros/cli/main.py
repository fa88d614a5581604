"""The ``ivfusion`` command: demo, fusing image folders, evaluation, configuration and variant listings, benchmarks.

Every command builds the same :class:`~ivfusion_ros.pipeline.Pipeline` the ROS node runs, from the same
YAML. Errors the user can fix (:class:`~ivfusion_ros.errors.IvfusionError`) print one line and exit 1.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ivfusion_ros import __version__
from ivfusion_ros.errors import ConfigError, IvfusionError

app = typer.Typer(
    name="ivfusion",
    help="Thermal + RGB fusion and detection: the offline side of the ivfusion_ros ROS 2 node.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = typer.Option(None, "--config", "-c", help="ROS 2 parameter YAML (default: built-in defaults).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a parameter: --set fusion.levels=3 (repeatable).")
VariantOpt = typer.Option(None, "--variant", "-v", help="Fusion variant (shorthand for --set fusion.variant=...).")
DetectorOpt = typer.Option(None, "--detector", "-d", help="Detector type: ivdet (default), hog, yolo or none.")


def handle_errors(fn: F) -> F:
    """Turn package errors into a one-line message and exit code 1 (tracebacks are for bugs only)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IvfusionError as err:
            console.print(f"[bold red]error:[/] {escape(str(err))}")  # messages hold paths, [extras]...
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c.d=[1,2]"]`` -> ``{"a.b": 1, "c.d": [1, 2]}`` (values parsed as YAML scalars/lists)."""
    import yaml

    out: dict[str, Any] = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def build_config(config: Path | None, sets: list[str] | None, variant: str | None = None,
                 detector: str | None = None, extra: dict[str, Any] | None = None):
    """Load the YAML and apply, in order: ``extra`` (command defaults), --variant/--detector, --set."""
    from ivfusion_ros.config import load_config

    overrides: dict[str, Any] = dict(extra or {})
    if variant:
        overrides["fusion.variant"] = variant
    if detector:
        overrides["detector.type"] = detector
    overrides.update(parse_sets(sets))
    return load_config(config, overrides)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", help="Log at INFO level."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command("variants")
def variants_cmd() -> None:
    """List the fusion variants and whether they need weights."""
    from ivfusion_ros.fusion import list_fusers

    table = Table("variant", "weights", "description")
    for info in list_fusers():
        table.add_row(info.name, "learned" if info.needs_weights else "none", info.description)
    Console().print(table)


@app.command("config")
@handle_errors
def config_cmd(
    config: Path | None = ConfigOpt,
    sets: list[str] | None = SetOpt,
    dump: bool = typer.Option(False, "--dump", help="Print the effective configuration as a ROS 2 parameter file."),
) -> None:
    """Show every parameter with its value and description, or --dump a parameter file."""
    from ivfusion_ros.config import config_to_flat, dump_ros_yaml, iter_fields

    cfg = build_config(config, sets)
    if dump:
        typer.echo(dump_ros_yaml(cfg), nl=False)
        return
    flat = config_to_flat(cfg)
    table = Table("parameter", "value", "description")
    for spec in iter_fields():
        value = flat[spec.name]
        table.add_row(spec.name, json.dumps(list(value) if isinstance(value, tuple) else value), spec.doc)
    Console(width=200).print(table)


@app.command("demo")
@handle_errors
def demo_cmd(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Output folder."),
    frames: int = typer.Option(24, "--frames", "-n", min=1, max=1000, help="Frames of the synthetic scene."),
    seed: int = typer.Option(0, "--seed", help="Scene random seed."),
    config: Path | None = ConfigOpt,
    sets: list[str] | None = SetOpt,
    variant: str | None = VariantOpt,
    detector: str | None = DetectorOpt,
) -> None:
    """Run the whole pipeline on a generated night street (no data, no weights needed).

    Writes fused frames with boxes (fused/), IR | VIS | fused strips (strips/), a preview strip.png and a
    summary.json with per-frame results, detection recall against the scene's ground truth on the fused
    image and on RGB alone, and per-stage latency.
    """
    from ivfusion_ros.cli.demo import run_demo

    run_demo(out, frames, seed, lambda extra: build_config(config, sets, variant, detector, extra), console)


@app.command("fuse")
@handle_errors
def fuse_cmd(
    ir: Path = typer.Option(..., "--ir", help="Thermal image file or folder."),
    vis: Path = typer.Option(..., "--vis", help="Visible image file or folder (paired with --ir by file name)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    config: Path | None = ConfigOpt,
    sets: list[str] | None = SetOpt,
    variant: str | None = VariantOpt,
    detector: str | None = DetectorOpt,
    strips: bool = typer.Option(False, "--strips", help="Also write IR | VIS | fused strips."),
    boxes: bool = typer.Option(True, "--boxes/--no-boxes", help="Draw detections on the written fused images."),
) -> None:
    """Fuse image pairs (and detect), writing fused PNGs and detections.json."""
    from ivfusion_ros.cli.fuse import run_fuse

    run_fuse(ir, vis, out, build_config(config, sets, variant, detector), strips, boxes, console)


Homography9 = tuple[float, float, float, float, float, float, float, float, float]


@app.command("make-bag")
@handle_errors
def make_bag_cmd(
    ir: Path = typer.Option(..., "--ir", help="Thermal image folder (or file)."),
    vis: Path = typer.Option(..., "--vis", help="Visible image folder (or file), paired with --ir by file name."),
    out: Path = typer.Option(..., "--out", "-o", help="Output bag: a rosbag2 folder, or one file if it ends in .mcap."),
    rate: float = typer.Option(10.0, "--rate", help="Pairs per second (stamp i = start + i / rate)."),
    thermal_topic: str = typer.Option("/thermal/image_raw", "--thermal-topic", help="Thermal image topic."),
    rgb_topic: str = typer.Option("/camera/image_raw", "--rgb-topic", help="RGB image topic."),
    thermal_encoding: str = typer.Option(
        "mono8", "--thermal-encoding",
        help="mono8, or mono16: centi-Kelvin-like counts 27315 + 20 * gray (16-bit files kept as they are)."),
    rgb_encoding: str = typer.Option("rgb8", "--rgb-encoding", help="rgb8 or bgr8."),
    homography: Homography9 | None = typer.Option(
        None, "--homography", help="9 numbers (row-major 3x3) warping the thermal images, to simulate misalignment."),
    jitter: float = typer.Option(0.0, "--jitter", help="Seconds of uniform +- noise on each camera's stamps."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the jitter."),
    start: float = typer.Option(1_700_000_000.0, "--start", help="Stamp of the first pair, seconds since the epoch."),
    fmt: str = typer.Option("mcap", "--format", help="Storage: mcap or sqlite3."),
    compressed: bool = typer.Option(False, "--compressed",
                                    help="sensor_msgs/CompressedImage on <topic>/compressed (PNG thermal, JPEG RGB)."),
    distro: str = typer.Option("jazzy", "--distro", help="Message definitions written: jazzy or humble."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output bag."),
) -> None:
    """Build a rosbag2 from folders of thermal/visible image pairs, so any dataset replays like two cameras."""
    from ivfusion_ros.cli.make_bag import run_make_bag
    from ivfusion_ros.io.make_bag import MakeBagOptions

    opts = MakeBagOptions(rate=rate, thermal_topic=thermal_topic, rgb_topic=rgb_topic,
                          thermal_encoding=thermal_encoding, rgb_encoding=rgb_encoding,
                          homography=tuple(homography) if homography else None, jitter=jitter, seed=seed,
                          start=start, storage=fmt, compressed=compressed, distro=distro, overwrite=overwrite)
    run_make_bag(ir, vis, out, opts, console)


@app.command("replay")
@handle_errors
def replay_cmd(
    bags: list[Path] = typer.Argument(..., metavar="BAG [BAG...]",
                                      help="Input bag(s): rosbag2 folder, .mcap, .db3 or ROS 1 .bag."),
    out: Path | None = typer.Option(
        None, "--out", "-o",
        help="Output bag (fused image, detections, status); .mcap = one file. With several bags or --ray: a "
             "folder, one <bag>.fused.mcap per bag."),
    report: Path | None = typer.Option(
        None, "--report", "-r",
        help="Folder to write report.json into (several bags or --ray: the fleet's report.json/.md/.html, and "
             "each bag's under bags/)."),
    config: Path | None = ConfigOpt,
    sets: list[str] | None = SetOpt,
    variant: str | None = VariantOpt,
    detector: str | None = DetectorOpt,
    thermal_topic: str = typer.Option("/thermal/image_raw", "--thermal-topic",
                                      help="Thermal topic (<topic>/compressed is used when only that exists)."),
    rgb_topic: str = typer.Option("/camera/image_raw", "--rgb-topic", help="RGB topic (or <topic>/compressed)."),
    write_inputs: bool = typer.Option(False, "--write-inputs", help="Also copy the two input topics to --out."),
    namespace: str = typer.Option("", "--namespace", help="Namespace of the output topics (like the node's)."),
    fmt: str = typer.Option("mcap", "--format", help="Output storage: mcap or sqlite3."),
    distro: str = typer.Option("jazzy", "--distro", help="Message definitions: jazzy or humble."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output bag."),
    ray: bool = typer.Option(False, "--ray", help="One Ray task per bag (local Ray unless --ray-address); "
                                                  "needs pip install 'ivfusion_ros[ray]'."),
    ray_address: str | None = typer.Option(None, "--ray-address",
                                           help="Ray cluster to use with --ray: auto, or ray://HOST:10001."),
    ray_cpus: int | None = typer.Option(None, "--ray-cpus", min=1,
                                        help="CPUs of the local Ray started for --ray (default: all)."),
) -> None:
    """Replay bags through the pipeline (pairing like the node, every pair, faster than real time).

    Writes the node's outputs to --out and report.json (per-frame records, drops by reason, latency) to --report.
    Several bags are replayed one after the other, or with --ray one Ray task per bag, into one fleet report;
    a bag that fails is reported and the others go on (exit code 1 if any failed).
    """
    from ivfusion_ros.replay import ReplayOptions

    if not ray and (ray_address is not None or ray_cpus is not None):
        raise ConfigError("--ray-address and --ray-cpus go with --ray")
    opts = ReplayOptions(thermal_topic=thermal_topic, rgb_topic=rgb_topic, namespace=namespace,
                         write_inputs=write_inputs, storage=fmt, distro=distro, overwrite=overwrite)
    cfg = build_config(config, sets, variant, detector)
    if len(bags) == 1 and not ray:
        from ivfusion_ros.cli.replay import run_replay

        run_replay(bags[0], cfg, out, report, opts, console)
        return
    from ivfusion_ros.cli.replay import run_fleet
    from ivfusion_ros.fleet import RayOptions

    run_fleet(bags, cfg, out, report, opts, RayOptions(ray_address, ray_cpus) if ray else None, console)


@app.command("eval")
@handle_errors
def eval_cmd(
    dataset: str | None = typer.Argument(
        None, metavar="DATASET[,DATASET...]",
        help="Data set folder(s), comma-separated: each with ir/ and vi/ image folders and optional labels "
             "(labels/ YOLO with classes.txt, Annotations/ VOC xml, or a COCO json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for report.json, report.html, report.md."),
    variants: str = typer.Option("adaptive,average,max", "--variants",
                                 help="Comma-separated fusion variants to compare (the first ranks best/worst)."),
    detector: str | None = DetectorOpt,
    model: Path | None = typer.Option(None, "--model", "-m", help="Model file for --detector yolo (the default "
                                                                  "with --model) or ivdet (a train-detector output)."),
    config: Path | None = ConfigOpt,
    sets: list[str] | None = SetOpt,
    limit: int | None = typer.Option(None, "--limit", "-n", min=1, help="Only the first N pairs of each data set."),
    ir: Path | None = typer.Option(None, "--ir", help="Thermal image folder (instead of DATASET/ir)."),
    vis: Path | None = typer.Option(None, "--vis", help="Visible image folder (instead of DATASET/vi)."),
    labels: Path | None = typer.Option(
        None, "--labels", help="Label folder (YOLO txt or VOC xml; e.g. labels/infrared) or COCO json file; "
                               "relative paths are also looked up in each data set."),
    classes: Path | None = typer.Option(None, "--classes", help="classes.txt for YOLO/VOC labels."),
    metrics: str | None = typer.Option(None, "--metrics", help="Comma-separated fusion metrics (default: all)."),
    thumbnails: int = typer.Option(3, "--thumbnails", min=0, help="Best and worst frames shown per data set."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed frames per pipeline at the start of a data set."),
    sequence: bool = typer.Option(False, "--sequence",
                                  help="Pairs are frames of one recording: keep regime and AGC state between them."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw the latency and timeline plots."),
) -> None:
    """Compare fusion variants: fusion metrics, detection mAP (IR only, VIS only, each variant), latency.

    Writes report.json, a self-contained report.html and report.md into --out, and prints the tables.
    """
    from ivfusion_ros.cli.eval import command_line, run_eval

    extra: dict[str, Any] = {}
    if model is not None:
        if detector not in (None, "yolo", "ivdet"):
            raise ConfigError(f"--model is for --detector yolo or ivdet, not {detector!r}")
        extra = {"detector.type": detector or "yolo", "detector.model": str(model)}
    cfg = build_config(config, sets, detector=detector, extra=extra)
    command = command_line(dataset, {
        "--variants": variants, "--detector": detector, "--model": model, "--config": config, "--set": sets or [],
        "--ir": ir, "--vis": vis, "--labels": labels, "--classes": classes, "--limit": limit, "--metrics": metrics,
        "--thumbnails": thumbnails if thumbnails != 3 else None, "--warmup": warmup if warmup != 1 else None,
        "--sequence": sequence, "--no-plots": not plots, "--out": out,
    })  # fmt: skip
    run_eval(dataset, cfg, out, variants=variants, ir=ir, vis=vis, labels=labels, classes=classes, limit=limit,
             metrics=metrics, thumbnails=thumbnails, warmup=warmup, sequence=sequence, plots=plots,
             command=command, console=console)


@app.command("train")
@handle_errors
def train_cmd(
    variant: str = typer.Option("amfusion-s", "--variant", "-v", help="Network to train (registry name)."),
    data: str = typer.Option(..., "--data", help="Training data set folder(s) with ir/ and vi/, comma-separated."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: last.pt, metrics.csv, <variant>.pt."),
    epochs: int = typer.Option(10, "--epochs", "-e", min=1, help="Total epochs (a resumed run continues to this)."),
    steps: int = typer.Option(0, "--steps", min=0, help="Steps per epoch (0: ceil(pairs / batch))."),
    batch: int = typer.Option(8, "--batch", "-b", min=1, help="Batch size."),
    crop: int = typer.Option(128, "--crop", min=8, help="Side of the random square crops, pixels."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak AdamW learning rate (cosine schedule)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialisation and the crops."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue from a last.pt checkpoint."),
    val: str | None = typer.Option(None, "--val", help="Validation data set folder(s) (default: training pairs)."),
    val_pairs: int = typer.Option(4, "--val-pairs", min=0, help="Validation pairs per epoch (0: none)."),
    loss: str | None = typer.Option(None, "--loss", help="Loss weights, e.g. ssim=0.5,gradient=2."),
    net_options: list[str] | None = typer.Option(None, "--net", help="Network option KEY=VALUE (YAML value; "
                                                                      "repeat), e.g. --net detail_skip=true."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (AMP on CUDA)."),
    threads: int = typer.Option(2, "--threads", min=0, help="CPU threads for torch (0: torch's default)."),
    clip_model: str = typer.Option("ViT-B-32", "--clip-model", help="open_clip model name (LDFusion's CLIP loss)."),
    clip_weights: str = typer.Option("", "--clip-weights", help="Local CLIP weights file (LDFusion)."),
    clip_prompt: list[str] = typer.Option([], "--clip-prompt",
                                          help="LDFusion prompt KEY=TEXT, KEY visible|infrared|fused (repeatable)."),
    text_encoder: str | None = typer.Option(None, "--text-encoder",
                                            help="Text-guided nets (t2p): encoder of the prompts, hash[:DIM], "
                                                 "minilm or clip:MODEL:WEIGHTS (embeddings cached in the weights)."),
    prompts: list[str] | None = typer.Option(None, "--prompt", help="Text-guided nets: a prompt (repeat the "
                                                                    "option for several; default: the net's)."),
    bilevel: bool = typer.Option(False, "--bilevel", help="Alternate lower-level detector and fusion updates "
                                                          "(t2p's bilevel training; needs labelled pairs; the "
                                                          "detector is --guide-detector)."),
    guide_detector: Path | None = typer.Option(
        None, "--guide-detector",
        help="Detector weights .pt (YOLOX-nano from `ivfusion train-detector`; the shipped one is "
             "ivfusion_ros/detect/weights/ivdet-n.pt). amfusion: DSFM attends to its backbone (saved in the "
             "weights); tsjnet: its detection loss drives the fusion (needs labels, as --bilevel); with "
             "--bilevel: the lower-level detector (default there: the shipped one)."),
    labels: str | None = typer.Option(None, "--labels", help="With --bilevel or a tsjnet --guide-detector: "
                                                             "YOLO/VOC/COCO labels (default: each data set's "
                                                             "labels/)."),
    det_weight: float = typer.Option(0.1, "--det-weight", min=0.0, help="Weight of the detection loss in the "
                                                                        "fusion update (--bilevel; tsjnet with "
                                                                        "--guide-detector unless --loss sets "
                                                                        "detection=)."),
) -> None:
    """Train a fusion network on image pairs (unsupervised) and write its weights with a training record."""
    import sys

    from ivfusion_ros.cli.train import parse_loss_weights, parse_net_options, parse_prompts, run_train
    from ivfusion_ros.train.trainer import TrainConfig

    def folders(text: str | None) -> list[str]:
        return [p.strip() for p in (text or "").split(",") if p.strip()]

    cfg = TrainConfig(variant=variant, data=folders(data), out=str(out), epochs=epochs, steps=steps, batch=batch,
                      crop=crop, lr=lr, seed=seed, val=folders(val), val_pairs=val_pairs,
                      loss=parse_loss_weights(loss), device=device, threads=threads, clip_model=clip_model,
                      clip_weights=clip_weights, clip_prompts=parse_prompts(clip_prompt))
    cfg.net.update(parse_net_options(net_options))
    if text_encoder:
        cfg.net["text_encoder"] = text_encoder
    if prompts:
        cfg.net["prompts"] = list(prompts)
    if bilevel and resume is not None:
        raise ConfigError("--bilevel runs cannot be resumed (--resume is for the plain training)")
    if guide_detector is not None and resume is not None:
        raise ConfigError("--guide-detector with --resume: the checkpoint names its detector; give only --resume")
    if resume is None:  # fail before reading data on an unknown network or loss term, or a CLIP loss without CLIP
        from ivfusion_ros.fusion.nets import ldfusion_loss
        from ivfusion_ros.fusion.nets.losses import create_loss
        from ivfusion_ros.fusion.nets.registry import net_info

        if guide_detector is not None:
            from ivfusion_ros.train.trainer import check_detector_use

            cfg.guide_detector = str(guide_detector)
            if check_detector_use(variant, bilevel) == "tsjnet" and not bilevel:
                cfg.loss.setdefault("detection", det_weight)
        cfg.labels = labels
        weights = create_loss(net_info(variant).family, **cfg.loss).weights
        if ldfusion_loss.uses_clip(weights) and not clip_weights:
            ldfusion_loss.load_clip(clip_model, "")  # raises the error that says what LDFusion training needs
    from ivfusion_ros.train.bilevel import BilevelConfig

    run_train(cfg, resume, sys.argv[2:] if len(sys.argv) > 2 else [], console,
              bilevel=BilevelConfig(det_weight=det_weight) if bilevel else None)


@app.command("export")
@handle_errors
def export_cmd(
    variant: str = typer.Option(..., "--variant", "-v", help="Network, e.g. amfusion-s (see `ivfusion variants`)."),
    out: Path = typer.Option(..., "--out", "-o", help="The .onnx file to write."),
    weights: Path | None = typer.Option(None, "--weights", "-w",
                                        help="Trained .pt weights (omit only for benchmarks: random weights)."),
    fmt: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    opset: int = typer.Option(18, "--opset", min=17, help="ONNX opset."),
    exporter: str = typer.Option("dynamo", "--exporter", help="dynamo (torch.export) or torchscript (legacy, fast)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare ONNX Runtime with torch at two sizes."),
) -> None:
    """Export a fusion network to ONNX (dynamic batch, height, width) with its metadata; check parity."""
    from ivfusion_ros.cli.export import run_export

    run_export(variant, out, weights=weights, fmt=fmt, opset=opset, exporter=exporter, check=check, console=console)


@app.command("train-detector")
@handle_errors
def train_detector_cmd(
    data: Path = typer.Option(..., "--data", help="Data file (YAML): classes, train and val data sets with their "
                                                  "inputs (fused, ir, vis); see scripts/prepare_msrs.py."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: last.pt, metrics.csv, best.pt, best.onnx."),
    init: str = typer.Option("", "--init", help="Starting weights: a detector .pt, or a YOLOX-nano .onnx export "
                                                "(e.g. the COCO yolox_nano.onnx); '' = random."),
    init_class_ids: str = typer.Option("0,1,2", "--init-class-ids",
                                       help="Class channels of an .onnx init kept, in the data's class order."),
    epochs: int = typer.Option(30, "--epochs", "-e", min=1, help="Total epochs (a resumed run continues to this)."),
    batch: int = typer.Option(16, "--batch", "-b", min=1, help="Batch size."),
    lr: float = typer.Option(5e-4, "--lr", help="Peak AdamW learning rate (warm-up, then cosine)."),
    warmup_steps: int = typer.Option(300, "--warmup-steps", min=0, help="Linear warm-up steps."),
    input_size: str = typer.Option("416x320", "--input-size", help="Network input WxH (multiples of 32)."),
    mosaic: float = typer.Option(0.5, "--mosaic", min=0.0, max=1.0, help="Probability of a 4-image mosaic."),
    limit: int = typer.Option(0, "--limit", min=0, help="At most N images per data set (0: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the augmentation."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue from a last.pt checkpoint."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: int = typer.Option(2, "--threads", min=0, help="CPU threads for torch (0: torch's default)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Pipeline parameter YAML that makes the fused "
                                                                    "and thermal training images (the node's)."),
    sets: list[str] | None = typer.Option(None, "--set", "-s", help="Pipeline override for the training images, "
                                                                    "e.g. --set fusion.variant=max (repeatable)."),
) -> None:
    """Fine-tune the package's detector (YOLOX-nano) on labelled fused / thermal / visible images."""
    import sys

    from ivfusion_ros.cli.train_detector import parse_size, run_train_detector
    from ivfusion_ros.config import load_config
    from ivfusion_ros.train.detector_trainer import DetectorTrainConfig

    try:
        ids = [int(v) for v in init_class_ids.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--init-class-ids expects comma-separated integers, got {init_class_ids!r}") from None
    overrides = parse_sets(sets)
    load_config(config, overrides)  # a bad parameter fails now, not after the data is read

    def absolute(p: str | Path | None) -> str:  # the checkpoint stores them: --resume may run from elsewhere
        return str(Path(p).expanduser().resolve()) if p else ""

    cfg = DetectorTrainConfig(data=absolute(data), out=str(out), init=absolute(init), init_class_ids=ids,
                              epochs=epochs, batch=batch, lr=lr, warmup_steps=warmup_steps,
                              input_size=parse_size(input_size), mosaic=mosaic, limit=limit, seed=seed, device=device,
                              threads=threads, config=absolute(config), sets=overrides)
    run_train_detector(cfg, resume, sys.argv[2:] if len(sys.argv) > 2 else [], console)


@app.command("bench")
@handle_errors
def bench_cmd(
    frames: int = typer.Option(50, "--frames", "-n", min=5, help="Timed frames per case (after warm-up)."),
    size: str = typer.Option("640x512", "--size", help="Resolution WxH, or several: 640x512,1280x1024."),
    variants: str = typer.Option("adaptive,average", "--variants", help="Comma-separated fusion variants."),
    detectors: str = typer.Option("hog,none", "--detectors",
                                  help="Comma-separated detectors: ivdet (or ivdet:torch, ivdet:tensorrt), hog, "
                                       "none, or YOLO model files."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda, or several: cpu,cuda."),
    backends: str = typer.Option("torch", "--backends",
                                 help="Backends of learned variants' networks: torch,onnxruntime,tensorrt."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the results as JSON."),
    sets: list[str] | None = SetOpt,
    nets: str = typer.Option("", "--nets", help="Also time these fusion networks alone (torch and ONNX Runtime), "
                                                "e.g. amfusion-s."),
    replay: bool = typer.Option(False, "--replay", help="Also measure replay_bag frames/s on an MCAP bag."),
) -> None:
    """Per-stage p50 / p90 / p99 latency, stream throughput and model-only time of the pipeline on the synthetic
    scene, for each device x variant x backend x detector x size."""
    from ivfusion_ros.cli.bench import run_bench

    run_bench(frames, size, variants, detectors, device, json_out, overrides=parse_sets(sets), nets=nets,
              backends=backends, replay=replay)


if __name__ == "__main__":  # pragma: no cover
    app()
