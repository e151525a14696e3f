#!/usr/bin/env python
"""Train or evaluate a tde-det model (detection on LVIS, or image classification).

Same arguments as Detectron2's own ``tools/train_net.py``::

    python tools/train_net.py --config-file configs/lvis_cascade_tde.yaml --num-gpus 8
    python tools/train_net.py --config-file configs/lvis_cascade_tde.yaml --eval-only \
        MODEL.WEIGHTS output/model_final.pth MODEL.TDE.ALPHA 1.0

``--eval-only`` writes its results, ``config.yaml`` and ``log.txt`` to ``<OUTPUT_DIR>/eval_<weights
name>/`` (to ``OUTPUT_DIR`` when it is given on the command line), never over a training run's
own (``tde_det.engine.tool_output_dir``).

``TEST.AUG.ENABLED True`` (detection) also evaluates with Detectron2's test-time augmentation
(after training, or after the plain evaluation with ``--eval-only``), as Detectron2's does.
"""
import detectron2.utils.comm as comm
from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results

import tde_det  # noqa: F401  (registers the heads, meta-architectures, backbones and datasets)
from tde_det.engine import TDECheckpointer, Trainer, check_test_time_augmentation, setup
from tde_det.engine.trainer import write_eval_only_metrics


def main(args):
    cfg = setup(args, tool="eval" if args.eval_only else "")
    check_test_time_augmentation(cfg)
    if args.eval_only:
        Trainer.check_datasets(cfg, training=False)
        model = Trainer.build_model(cfg)
        # --resume: the last checkpoint of the run (the config's OUTPUT_DIR)
        TDECheckpointer(model, save_dir=args.run_dir).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            write_eval_only_metrics(cfg.OUTPUT_DIR, res, model)
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
