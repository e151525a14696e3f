#!/usr/bin/env python
"""Draw a TDE detector's predictions with Detectron2's ``Visualizer``.

    python tools/visualize.py --config-file configs/lvis_cascade_tde.yaml --input img.jpg dir/ \
        --output vis/ MODEL.WEIGHTS model_final.pth
    python tools/visualize.py --config-file configs/TinyLVIS/cascade_R_18_tde.yaml \
        --dataset tiny_lvis_val --show-gt --compare-tde --output vis/ MODEL.WEIGHTS ...

Inputs: image files, folders (their images) or globs (--input), or a registered dataset split
(--dataset). Class names come from the metadata of --dataset, else of the first DATASETS.TEST
(LVIS names for LVIS). The prediction panel follows the config: TDE with MODEL.TDE.ALPHA when
MODEL.TDE.TEST_TDE is on ("TDE (alpha=1.5)"), eq. 7 scores otherwise ("no TDE"). --show-gt draws
the ground truth beside the predictions (dataset inputs); --compare-tde adds the same image with
the other setting (refused for MODEL.TDE.CLASSIFIER linear: TDE does not apply). After --input,
every argument is an input until the first one that is a config key (it contains a dot and names
a key of the config, e.g. MODEL.WEIGHTS) and no existing path. Unreadable images are skipped with
a warning and counted. An image whose shorter side is under --min-size pixels is drawn
enlarged, so that its labels fit; a panel without a detection above --confidence-threshold says
so in its title and in the log. Writes to --output (default: ``<OUTPUT_DIR>/visualize_<weights
name>``, never a training run's folder: ``tde_det.engine.tool_output_dir``). Works on CPU
(MODEL.DEVICE cpu).
"""
import glob
import logging
import os
from typing import List, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import Visualizer
from PIL import Image

import tde_det  # noqa: F401  (registration)
from tde_det.engine import parse_tool_args, setup, tool_argument_parser
from tde_det.engine.dataset_checks import check_registered
from tde_det.layers import has_tde
from tde_det.modeling.roi_heads import TDEFastRCNNOutputLayers

logger = logging.getLogger("tde_det.visualize")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def expand_inputs(inputs: Sequence[str]) -> List[str]:
    """Files, folders (their images, sorted) and globs -> image paths, each file once (the
    first time it is named). A folder without images or a glob that matches no file is
    logged; a missing file is an error, and so is no image at all."""
    paths: List[str] = []
    seen = set()
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                logger.warning(f"--input {item}: the folder holds no image "
                               f"({', '.join(IMAGE_EXTENSIONS)})")
        elif any(c in item for c in "*?["):
            found = sorted(p for p in glob.glob(item) if not os.path.isdir(p))
            if not found:
                logger.warning(f"--input {item}: the pattern matches no file")
        else:
            if not os.path.exists(item):
                raise FileNotFoundError(f"--input {item}: no such file or folder")
            found = [item]
        for path in found:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                paths.append(path)
    if not paths:
        raise SystemExit(f"--input {' '.join(inputs)}: no image file to draw")
    return paths


def output_names(paths: Sequence[str], extension: str) -> List[str]:
    """One output file name per input path: its name with ``extension``; inputs whose names
    would collide (``a/img.jpg`` and ``b/img.jpg``, or ``img.jpg`` and ``img.png``) get
    ``_2``, ``_3``, ... in input order, which is logged, so that no drawing overwrites
    another."""
    names: List[str] = []
    taken = set()
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = f"{stem}.{extension}", 1
        while name in taken:
            n += 1
            name = f"{stem}_{n}.{extension}"
        if n > 1:
            logger.warning(f"{path}: {stem}.{extension} is already the drawing of another "
                           f"input; writing {name}")
        taken.add(name)
        names.append(name)
    return names


def set_tde(model: torch.nn.Module, on: bool) -> None:
    for m in model.modules():
        if isinstance(m, TDEFastRCNNOutputLayers):
            m.test_tde = on


def tde_applies(model: torch.nn.Module) -> bool:
    """Whether the model has TDE box predictors with a normalised classifier (not 'linear')."""
    predictors = [m for m in model.modules() if isinstance(m, TDEFastRCNNOutputLayers)]
    return bool(predictors) and all(has_tde(p.cls_score.kind) for p in predictors)


def panel_settings(test_tde: bool, alpha: float, compare: bool) -> List[Tuple[bool, str]]:
    """(TDE on, title) of the prediction panels: the config's setting, then the other one."""
    title = {True: f"TDE (alpha={alpha:g})", False: "no TDE"}
    settings = [test_tde, not test_tde] if compare else [test_tde]
    return [(on, title[on]) for on in settings]


def display_scale(height: int, width: int, min_size: int) -> float:
    """How much to enlarge an image so that its shorter side has ``min_size`` pixels and the
    labels fit (1: large enough already, or ``min_size`` 0)."""
    return max(1.0, min_size / min(height, width))


def no_detection_note(threshold: float) -> str:
    return f": no detection with score >= {threshold:g}"


def draw(image_rgb: np.ndarray, metadata, instances=None, record=None, title: str = "",
         scale: float = 1.0) -> np.ndarray:
    """``instances`` (all drawn) or the ground truth of ``record``, enlarged ``scale`` times,
    with ``title`` at the top left."""
    vis = Visualizer(image_rgb, metadata, scale=scale)
    # Visualizer sizes labels from the image's own size: an enlarged small image keeps them
    # readable (at least about 14 pixels high in the drawing)
    vis._default_font_size = max(vis._default_font_size, 14 / scale)
    if instances is not None:
        out = vis.draw_instance_predictions(instances.to("cpu"))
    else:
        out = vis.draw_dataset_dict(record)
    img = out.get_image()
    if title:
        vis2 = Visualizer(img, metadata, scale=1.0)
        img = vis2.draw_text(title, (4, 4), horizontal_alignment="left",
                             font_size=max(8, min(img.shape[0] // 25,
                                                  1.6 * img.shape[1] / len(title)))).get_image()
    return img


def main(args) -> int:
    cfg = setup(args, tool="visualize")
    if args.dataset:
        check_registered([args.dataset], "--dataset")
    if cfg.MODEL.META_ARCHITECTURE == "TDEImageClassifier":
        raise SystemExit("tools/visualize.py draws detections; for a classifier use "
                         "tools/diagnose.py (per-class accuracy with and without TDE)")
    dataset = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
    metadata = MetadataCatalog.get(dataset) if dataset else MetadataCatalog.get("__unused")
    if args.dataset:
        records = DatasetCatalog.get(args.dataset)
    else:
        if not args.input:
            raise SystemExit("give --input images/folders/globs or --dataset NAME")
        records = [{"file_name": p} for p in expand_inputs(args.input)]
    if len(records) > args.max_images:
        logger.info(f"drawing the first {args.max_images} of {len(records)} images "
                    f"(--max-images)")
        records = records[: args.max_images]
    if args.show_gt and not args.dataset:
        raise SystemExit("--show-gt needs --dataset (ground truth comes from a registered split)")
    predictor = DefaultPredictor(cfg)
    applies = tde_applies(predictor.model)
    if args.compare_tde and not applies:
        raise SystemExit(f"--compare-tde: TDE (eq. 8) does not apply to this detector "
                         f"(MODEL.TDE.CLASSIFIER {cfg.MODEL.TDE.CLASSIFIER!r}, ROI heads "
                         f"{cfg.MODEL.ROI_HEADS.NAME}); it needs TDECascadeROIHeads with a "
                         f"cosine, capsule or deconfound classifier")
    settings = panel_settings(cfg.MODEL.TDE.TEST_TDE and applies, cfg.MODEL.TDE.ALPHA,
                              args.compare_tde)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    written = skipped = 0
    names = output_names([r["file_name"] for r in records], args.format)
    for record, name in zip(records, names):
        path = record["file_name"]
        try:
            image = utils.read_image(path, format=cfg.INPUT.FORMAT)
        except Exception as e:  # unreadable or corrupt: skip it, say so, count it
            logger.warning(f"skipping {path}: cannot read the image ({e})")
            skipped += 1
            continue
        rgb = image[:, :, ::-1] if cfg.INPUT.FORMAT == "BGR" else image
        scale = display_scale(*rgb.shape[:2], args.min_size)
        panels = []
        if args.show_gt:
            panels.append(draw(rgb, metadata, record=record, title="ground truth", scale=scale))
        for on, title in settings:
            set_tde(predictor.model, on)
            instances = predictor(image)["instances"].to("cpu")
            instances = instances[instances.scores >= args.confidence_threshold]
            if len(instances) == 0:
                title += no_detection_note(args.confidence_threshold)
                logger.info(f"{path}, {title}")
            panels.append(draw(rgb, metadata, instances, title=title, scale=scale))
        set_tde(predictor.model, cfg.MODEL.TDE.TEST_TDE)
        height = max(p.shape[0] for p in panels)
        panels = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0)), constant_values=255)
                  for p in panels]
        Image.fromarray(np.concatenate(panels, axis=1)).save(os.path.join(cfg.OUTPUT_DIR, name))
        written += 1
    print(f"wrote {written} images to {cfg.OUTPUT_DIR}" + (f"; skipped {skipped} unreadable"
                                                        if skipped else ""))
    if written == 0:
        raise SystemExit("no image could be drawn")
    return written


def build_parser():
    parser = tool_argument_parser(__doc__, "visualize")
    parser.add_argument("--input", nargs="+", default=[], metavar="PATH",
                        help="image files, folders (their images) or globs to draw; ends at the "
                        "first argument that names a config key and is no existing path")
    parser.add_argument("--dataset", default="", help="a registered split to draw instead of "
                        "--input (its first --max-images images)")
    parser.add_argument("--confidence-threshold", type=float, default=0.3,
                        help="draw the detections with at least this score, in [0, 1]")
    parser.add_argument("--min-size", type=int, default=480,
                        help="draw an image whose shorter side is smaller enlarged to this many "
                        "pixels, so that the labels fit (0: at its own size)")
    parser.add_argument("--max-images", type=int, default=20,
                        help="draw at most this many images (the first ones)")
    parser.add_argument("--show-gt", action="store_true",
                        help="draw the ground truth beside the predictions (--dataset only)")
    parser.add_argument("--compare-tde", action="store_true",
                        help="add a panel with the other TDE setting (MODEL.TDE.TEST_TDE "
                        "switched)")
    parser.add_argument("--format", default="png", choices=["png", "jpg"],
                        help="file format of the drawings")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parse_tool_args(parser, argv)
    if args.input and args.dataset:
        parser.error("give --input or --dataset, not both")
    if args.min_size < 0:
        parser.error(f"--min-size must be >= 0, got {args.min_size}")
    if args.max_images < 1:
        parser.error(f"--max-images must be >= 1, got {args.max_images}")
    if not 0.0 <= args.confidence_threshold <= 1.0:  # also refuses NaN
        parser.error(f"--confidence-threshold must be a score in [0, 1], got "
                     f"{args.confidence_threshold}")
    return args


if __name__ == "__main__":
    main(parse_args())
