#!/usr/bin/env python
"""Train or evaluate a tde-det model (detection on LVIS, or image classification).

Same arguments as Detectron2's own ``tools/train_net.py``::

    python tools/train_net.py --config-file configs/lvis_cascade_tde.yaml --num-gpus 8
    python tools/train_net.py --config-file configs/lvis_cascade_tde.yaml --eval-only \
        MODEL.WEIGHTS output/model_final.pth MODEL.TDE.ALPHA 1.0
"""
import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils.logger import setup_logger

import tde_det  # noqa: F401  (registers the heads, meta-architectures, backbones and datasets)
from tde_det import add_tde_config
from tde_det.engine import Trainer


def setup(args):
    cfg = get_cfg()
    add_tde_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    # tde-det's own loggers (tables of the evaluators, data checks) print like Detectron2's.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="tde_det")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            from detectron2.evaluation import verify_results

            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
