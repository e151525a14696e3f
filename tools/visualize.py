#!/usr/bin/env python
"""Draw a TDE detector's predictions with Detectron2's ``Visualizer``.

    python tools/visualize.py --config-file configs/lvis_cascade_tde.yaml --input img.jpg dir/ \
        --output vis/ MODEL.WEIGHTS model_final.pth
    python tools/visualize.py --config-file configs/tiny_lvis_cascade_tde_cpu.yaml \
        --dataset tiny_lvis_val --show-gt --compare-tde --output vis/ MODEL.WEIGHTS ...

Inputs: image files, folders (their images) or globs (--input), or a registered dataset split
(--dataset). Class names come from the metadata of --dataset, else of the first DATASETS.TEST
(LVIS names for LVIS). The prediction panel follows the config: TDE with MODEL.TDE.ALPHA when
MODEL.TDE.TEST_TDE is on ("TDE (alpha=1.5)"), eq. 7 scores otherwise ("no TDE"). --show-gt draws
the ground truth beside the predictions (dataset inputs); --compare-tde adds the same image with
the other setting (refused for MODEL.TDE.CLASSIFIER linear: TDE does not apply). After --input,
every argument is an input until the first one that is a config key (it contains a dot and names
a key of the config, e.g. MODEL.WEIGHTS) and no existing path. Unreadable images are skipped with
a warning and counted. Works on CPU (MODEL.DEVICE cpu).
"""
import glob
import logging
import os
import sys
from typing import List, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.engine import DefaultPredictor, default_argument_parser
from detectron2.utils.visualizer import Visualizer
from PIL import Image

import tde_det  # noqa: F401  (registration)
from tde_det import add_tde_config
from tde_det.engine import setup
from tde_det.engine.dataset_checks import check_registered
from tde_det.data.detection import register_lvis_datasets_from_config
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
    return bool(predictors) and all(p.cls_score.kind != "linear" for p in predictors)


def panel_settings(test_tde: bool, alpha: float, compare: bool) -> List[Tuple[bool, str]]:
    """(TDE on, title) of the prediction panels: the config's setting, then the other one."""
    title = {True: f"TDE (alpha={alpha:g})", False: "no TDE"}
    settings = [test_tde, not test_tde] if compare else [test_tde]
    return [(on, title[on]) for on in settings]


def draw(image_rgb: np.ndarray, metadata, instances=None, record=None, threshold=0.0,
         title: str = "") -> np.ndarray:
    vis = Visualizer(image_rgb, metadata, scale=1.0)
    if instances is not None:
        instances = instances.to("cpu")
        out = vis.draw_instance_predictions(instances[instances.scores >= threshold])
    else:
        out = vis.draw_dataset_dict(record)
    img = out.get_image()
    if title:
        vis2 = Visualizer(img, metadata, scale=1.0)
        img = vis2.draw_text(title, (4, 4), horizontal_alignment="left",
                             font_size=max(8, img.shape[0] // 25)).get_image()
    return img


def main(args) -> int:
    cfg = setup(args)
    register_lvis_datasets_from_config(cfg)
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
    os.makedirs(args.output, exist_ok=True)
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
        panels = []
        if args.show_gt:
            panels.append(draw(rgb, metadata, record=record, title="ground truth"))
        for on, title in settings:
            set_tde(predictor.model, on)
            panels.append(draw(rgb, metadata, predictor(image)["instances"],
                               threshold=args.confidence_threshold, title=title))
        set_tde(predictor.model, cfg.MODEL.TDE.TEST_TDE)
        height = max(p.shape[0] for p in panels)
        panels = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0)), constant_values=255)
                  for p in panels]
        Image.fromarray(np.concatenate(panels, axis=1)).save(os.path.join(args.output, name))
        written += 1
    print(f"wrote {written} images to {args.output}" + (f"; skipped {skipped} unreadable"
                                                        if skipped else ""))
    if written == 0:
        raise SystemExit("no image could be drawn")
    return written


def is_config_key(arg: str, cfg: CfgNode) -> bool:
    """Whether ``arg`` is a KEY of a trailing KEY VALUE override rather than an --input: it
    names a key of ``cfg`` (so it contains a dot) and is no existing path."""
    if "." not in arg or os.path.exists(arg):
        return False
    node = cfg
    for part in arg.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return False
        node = node[part]
    return True


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    keys = get_cfg()
    add_tde_config(keys)
    # Tool options may also follow the trailing KEY VALUE overrides.
    flags = {"--show-gt", "--compare-tde"}
    valued = {"--dataset", "--output", "--confidence-threshold", "--max-images", "--format"}
    front, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] in flags:
            front.append(argv[i])
        elif argv[i] in valued and i + 1 < len(argv):
            front += argv[i:i + 2]
            i += 1
        elif argv[i] == "--input":
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--") \
                    and not is_config_key(argv[j], keys):
                j += 1
            front += argv[i:j]
            i = j - 1
        else:
            rest.append(argv[i])
        i += 1
    parser = default_argument_parser()
    parser.add_argument("--input", nargs="+", default=[], help="images, folders or globs")
    parser.add_argument("--dataset", default="", help="a registered split instead of --input")
    parser.add_argument("--output", default="output/visualize")
    parser.add_argument("--confidence-threshold", type=float, default=0.3)
    parser.add_argument("--max-images", type=int, default=20)
    parser.add_argument("--show-gt", action="store_true")
    parser.add_argument("--compare-tde", action="store_true")
    parser.add_argument("--format", default="png", choices=["png", "jpg"])
    args = parser.parse_args(front + rest)
    if args.max_images < 1:
        parser.error(f"--max-images must be >= 1, got {args.max_images}")
    if not 0.0 <= args.confidence_threshold <= 1.0:  # also refuses NaN
        parser.error(f"--confidence-threshold must be a score in [0, 1], got "
                     f"{args.confidence_threshold}")
    return args


if __name__ == "__main__":
    main(parse_args())
