"""Config keys of tde-det: every number of the method lives here, with the paper's default.

Equation numbers refer to Tang, Huang, Zhang, "Long-Tailed Classification by Keeping the Good and
Removing the Bad Momentum Causal Effect", NeurIPS 2020.
"""
from detectron2.config import CfgNode as CN


def add_tde_config(cfg: CN) -> None:
    """Add every tde-det key to a Detectron2 config (call once, before merging a yaml file)."""
    _add_method_config(cfg)
    _add_detection_config(cfg)
    _add_classification_config(cfg)
    _add_run_config(cfg)


def _add_run_config(cfg: CN) -> None:
    """Keys of how a run is started, shared by both tasks."""
    # --resume compares the model-defining MODEL keys with OUTPUT_DIR/config.yaml of the run
    # it resumes and stops if any differ (tde_det/engine/resume_check.py); True resumes anyway.
    cfg.RESUME_ALLOW_MODEL_CHANGE = False


def _add_method_config(cfg: CN) -> None:
    """Keys of the method itself, shared by the detection head and the image classifier."""
    cfg.MODEL.TDE = CN()
    # Classifier of eq. 7 and its ablations (paper Table 4, supplement eq. 1):
    # "linear" (plain w^T x, no bias), "cosine", "capsule", "deconfound" (eq. 7).
    cfg.MODEL.TDE.CLASSIFIER = "deconfound"
    # K: number of heads the feature and the weights are split into (paper: 2).
    cfg.MODEL.TDE.NUM_HEADS = 2
    # tau: logit scale of eq. 7 (paper: 16).
    cfg.MODEL.TDE.TAU = 16.0
    # gamma: added to ||w_i^k|| in eq. 7 (paper: 1/32).
    cfg.MODEL.TDE.GAMMA = 1.0 / 32.0
    # epsilon added to ||x^k|| so that a zero feature chunk gives finite logits (official
    # detection code: 1e-9).
    cfg.MODEL.TDE.FEATURE_EPS = 1e-9
    # alpha of eq. 8 (paper: LVIS 1.5, ImageNet-LT 3.0, CIFAR-10-LT 1.0, CIFAR-100-LT 1.5).
    # alpha = 0 gives back eq. 7 exactly.
    cfg.MODEL.TDE.ALPHA = 1.5
    # Apply TDE (eq. 8) at test time. Training always uses eq. 7.
    cfg.MODEL.TDE.TEST_TDE = True
    # mu: decay of the head-direction EMA (Assumption 1), x_bar <- mu * x_bar + mean(x).
    # Official LVIS head: 1 - 0.1 * 0.002 = 0.9998; official classification code: 0.9.
    cfg.MODEL.TDE.MU = 0.9998
    # Update rule of that moving average: "sum" (x_bar <- mu * x_bar + mean(x), the official
    # code's) or "average" (x_bar <- mu * x_bar + (1 - mu) * mean(x)); same direction at fixed mu.
    cfg.MODEL.TDE.HEAD_DIRECTION_FORM = "sum"
    # Average the batch mean of the head direction across processes before the update, so that
    # every rank holds the same EMA (the official code does not).
    cfg.MODEL.TDE.SYNC_HEAD_DIRECTION = True
    # Training steps on a GPU: compute the normalised classifier (forward and backward) and the
    # head-direction update with Triton kernels (tde_det/layers/fused/): 5 launches
    # per stage, the update riding in the classifier's (with a synchronised head direction on
    # several GPUs: 2 more), instead of 24 + 11 operators in eager PyTorch (a linear layer: 5).
    # Same maths; float32 sums in another order, so results can differ in the last bits. Only
    # float32 CUDA tensors use them: the CPU, float64 and inference run the eager maths, and so
    # does a GPU where Triton is missing or fails its first try (with a warning). Faster
    # training steps of the heads (tools/benchmarks/heads.py).
    cfg.MODEL.TDE.FUSED_KERNELS = True


def _add_detection_config(cfg: CN) -> None:
    """Keys used only by the detection branch (TDE cascade ROI heads on LVIS)."""
    # Background-exempted inference (eq. 9); without it TDE hurts detection badly
    # (supplement Table 1, LVIS v0.5: 23.4 AP without vs 28.4 with).
    cfg.MODEL.TDE.BACKGROUND_EXEMPTED = True
    # Every this many iterations each box predictor puts its head-direction metrics
    # ("tde/stage{k}/...") into the EventStorage and the console; 0: never.
    cfg.MODEL.TDE.LOG_PERIOD = 20

    # --- the user's own LVIS-format datasets (parallel lists, one entry per dataset) ---
    # Each NAMES[i] is registered with JSON_FILES[i] (LVIS-format json: images, annotations,
    # categories with "frequency") and IMAGE_ROOTS[i] (image i at IMAGE_ROOT/<file_name>, or
    # at IMAGE_ROOT/<split folder>/<file> from "coco_url" when an image has no "file_name"),
    # evaluated with LVISEvaluator. Detectron2's built-in LVIS names (lvis_v1_train, ...) need
    # nothing here: they live under $DETECTRON2_DATASETS.
    cfg.DATASETS.LVIS_CUSTOM = CN()
    cfg.DATASETS.LVIS_CUSTOM.NAMES = ()
    cfg.DATASETS.LVIS_CUSTOM.JSON_FILES = ()
    cfg.DATASETS.LVIS_CUSTOM.IMAGE_ROOTS = ()
    # Invalid annotations in LVIS-format data (unknown category id, degenerate box; when
    # MODEL.MASK_ON: a missing or empty segmentation, a < 3-point polygon, an RLE mask with
    # INPUT.MASK_FORMAT "polygon" or, with "bitmask", an RLE without "size"/"counts") and images
    # whose file is missing: "error" stops with an error naming the image and annotation before
    # training starts; "skip" drops them and logs a count. An image file that cannot be read
    # (corrupt, truncated) is met when it is first drawn: "error" stops naming it; "skip" logs
    # it and trains on other images (evaluation never skips an image). The classification task
    # applies the policy to its training images that are missing or cannot be read (its split
    # files are checked line by line and always stop on a malformed line).
    cfg.DATASETS.INVALID_ANNOTATIONS = "error"
    # Check that every image file exists when the dataset is loaded (LVIS format) or its loader
    # is built (classification split files): one stat per image.
    cfg.DATASETS.CHECK_IMAGE_FILES = True
    # LVIS evaluation (--eval-only, evaluation during training, tools/sweep_alpha.py,
    # tools/diagnose.py): True computes the LVIS API's metrics with FastLVISEval
    # (tde_det/evaluation/fast_lvis_eval.py), which visits only the (image, category) pairs with
    # ground truth or detections; the numbers are the LVIS API's, bit for bit (tested). False
    # runs the LVIS API's own LVISEval.
    cfg.TEST.FAST_LVIS_EVAL = True
    # --- AP-fixed (Dave et al. 2021, "Evaluating Large-Vocabulary Object Detectors"): per
    # category the K highest-scored detections over the whole split, no per-image limit, LVIS AP
    # with max_dets -1; reported beside the standard AP as "<task>/AP-fixed" (and APr/APc/APf).
    cfg.TEST.AP_FIXED = CN()
    # Also evaluate AP-fixed (LVIS splits only), from the same inference pass as the standard
    # top-TEST.DETECTIONS_PER_IMAGE results, which stay as they are.
    cfg.TEST.AP_FIXED.ENABLED = False
    # K: detections kept per category over the split (the protocol and the LVIS challenge: 10000).
    cfg.TEST.AP_FIXED.DETS_PER_CLASS = 10000
    # Candidates per image: the first this many of the box head's detections (after NMS, by
    # score), -1: all of them (the protocol has no per-image limit).
    cfg.TEST.AP_FIXED.DETS_PER_IMAGE = -1
    # Candidates need a score above this. They come from the box head's pass of the standard
    # results (MODEL.ROI_HEADS.SCORE_THRESH_TEST, NMS_THRESH_TEST): lower values change nothing.
    cfg.TEST.AP_FIXED.SCORE_THRESH = 0.0


def _add_classification_config(cfg: CN) -> None:
    """Keys used only by the image-classification branch (ImageNet-LT, CIFAR-LT)."""
    # --- the image classifier (meta-architecture "TDEImageClassifier") ---
    cfg.MODEL.IMAGE_CLASSIFIER = CN()
    # Backbone output that is globally average-pooled into the feature x of eq. 7
    # (ResNeXt-50: "res5", 2048-d post-ReLU; CIFAR ResNet-32: "res5", the two 64-channel
    # branches concatenated to 128-d).
    cfg.MODEL.IMAGE_CLASSIFIER.IN_FEATURE = "res5"
    # C: number of classes (ImageNet-LT 1000, CIFAR-10-LT 10, CIFAR-100-LT 100).
    cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES = 1000
    # How mu of the head-direction EMA evolves during training:
    # "constant": mu = MODEL.TDE.MU throughout (official CIFAR code, mu = 0.9);
    # "lr": mu = 1 - (1 - MODEL.TDE.MU) * min(MU_LR_SCALE * lr, 1), re-computed every iteration
    #       from the current learning rate (official code for non-CIFAR data, with MU = 0.9 and
    #       MU_LR_SCALE = 50, rescaled there once per epoch: the EMA freezes as cosine LR -> 0).
    cfg.MODEL.TDE.MU_SCHEDULE = "constant"
    cfg.MODEL.TDE.MU_LR_SCALE = 50.0
    # Head direction that TDE (eq. 8) removes at test time, to ablate the tracked x_bar:
    # "ema" (x_bar, the method), "ones" (the constant all-ones vector), "train_mean" (the mean
    # feature of the training set after training, which tde_det.modeling.meta_arch.
    # set_train_mean_direction computes), "random" (RANDOM_DIRECTION_SEED), "zero" (= no TDE).
    cfg.MODEL.TDE.TEST_DIRECTION = "ema"
    # Seed of the standard-normal "random" test direction.
    cfg.MODEL.TDE.RANDOM_DIRECTION_SEED = 0

    # --- the BBN-style CIFAR ResNet (backbone "build_cifar_resnet_backbone") ---
    cfg.MODEL.CIFAR_RESNET = CN()
    # 6n + 2 layers; 32 -> n = 5 blocks per stage (the last stage: n - 1 shared blocks, then
    # NUM_BRANCHES parallel blocks whose outputs are concatenated).
    cfg.MODEL.CIFAR_RESNET.DEPTH = 32
    # BBN: two 64-channel branches -> 128-d, so with K = 2 each head is one branch.
    cfg.MODEL.CIFAR_RESNET.NUM_BRANCHES = 2
    # Normalisation ("BN", "SyncBN", "GN", ...; Detectron2's get_norm).
    cfg.MODEL.CIFAR_RESNET.NORM = "BN"
    # Shortcut when the shape changes: "A" (zero-padded identity, as BBN) or "B" (1x1 conv + norm).
    cfg.MODEL.CIFAR_RESNET.SHORTCUT = "A"
    # Outputs: "stem", "res2", "res3", "res4", "res5" (res5 = the concatenated branches).
    cfg.MODEL.CIFAR_RESNET.OUT_FEATURES = ["res5"]

    # --- augmentation of classification images ---
    cfg.INPUT.CLASSIFICATION = CN()
    # "imagenet": RandomResizedCrop + flip + ColorJitter (train), Resize + CenterCrop (test);
    # "cifar": zero-pad + RandomCrop + flip (train), nothing (test); "none": no augmentation.
    cfg.INPUT.CLASSIFICATION.AUGMENTATION = "imagenet"
    # Training crop size (ImageNet-LT 224, CIFAR 32).
    cfg.INPUT.CLASSIFICATION.CROP_SIZE = 224
    # RandomResizedCrop: range of the crop's area (fraction of the image) and aspect ratio.
    cfg.INPUT.CLASSIFICATION.RESIZED_CROP_SCALE = (0.08, 1.0)
    cfg.INPUT.CLASSIFICATION.RESIZED_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
    # ColorJitter (brightness, contrast, saturation) strengths, applied in random order
    # (official ImageNet-LT code: 0.4, 0.4, 0.4; 0 disables one).
    cfg.INPUT.CLASSIFICATION.COLOR_JITTER = (0.4, 0.4, 0.4)
    # Probability of a horizontal flip in training.
    cfg.INPUT.CLASSIFICATION.FLIP_PROB = 0.5
    # CIFAR: zero padding on each side before the random crop (official: 4).
    cfg.INPUT.CLASSIFICATION.PAD = 4
    # Test: resize the shorter side to TEST_RESIZE, then centre-crop TEST_CROP_SIZE (ImageNet-LT
    # 256 / 224); 0 skips the step.
    cfg.INPUT.CLASSIFICATION.TEST_RESIZE = 256
    cfg.INPUT.CLASSIFICATION.TEST_CROP_SIZE = 224

    # --- evaluation ---
    cfg.TEST.CLASSIFICATION = CN()
    # Images per batch and process in the test loader.
    cfg.TEST.CLASSIFICATION.IMS_PER_BATCH = 64
    # Shot groups by training images per class: many n > MANY_THRESHOLD, few n < FEW_THRESHOLD,
    # medium otherwise (paper: > 100, 20-100, < 20).
    cfg.TEST.CLASSIFICATION.MANY_THRESHOLD = 100
    cfg.TEST.CLASSIFICATION.FEW_THRESHOLD = 20
    # k of the top-k accuracy reported beside top-1.
    cfg.TEST.CLASSIFICATION.TOPK = 5

    # --- a user's own long-tailed dataset: an image folder + split files ---
    # Each split file has one "relative/path/to/image.jpg <label>" line per image, paths
    # relative to IMAGE_ROOT, labels 0..C-1. When NAME is set, "<NAME>_train", "<NAME>_val"
    # and "<NAME>_test" are registered (those whose file is given); train counts per class
    # (for the many/medium/few groups) come from the TRAIN split.
    cfg.DATASETS.SPLIT_FILE = CN()
    cfg.DATASETS.SPLIT_FILE.NAME = ""
    cfg.DATASETS.SPLIT_FILE.IMAGE_ROOT = ""
    cfg.DATASETS.SPLIT_FILE.TRAIN = ""
    cfg.DATASETS.SPLIT_FILE.VAL = ""
    cfg.DATASETS.SPLIT_FILE.TEST = ""
    # C; 0 = one more than the largest label of the TRAIN split.
    cfg.DATASETS.SPLIT_FILE.NUM_CLASSES = 0

    # --- Fashion-MNIST-LT (datasets "fashion_mnist_lt_r{10,50,100}_s{seed}_{train,val,test}") ---
    cfg.DATASETS.FASHION_MNIST = CN()
    # Folder of the IDX files ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]); "" =
    # $DETECTRON2_DATASETS/fashion-mnist if it exists, else /usr/share/datasets/fashion-mnist
    # (Debian's package dataset-fashion-mnist).
    cfg.DATASETS.FASHION_MNIST.ROOT = ""

    # --- the small CNN for 28x28 images (backbone "build_small_cnn_backbone") ---
    cfg.MODEL.SMALL_CNN = CN()
    # Output channels of each stage (two 3x3 conv + norm + ReLU, then 2x2 max-pool but after
    # the last stage); the last stage's channels are the feature dimension d of eq. 7.
    cfg.MODEL.SMALL_CNN.CHANNELS = [32, 64, 128]
    # Normalisation after each conv ("BN", "GN", "" for none; Detectron2's get_norm).
    cfg.MODEL.SMALL_CNN.NORM = "BN"
    # Outputs: "stage1", "stage2", ... (the pooled classifier feature: the last stage).
    cfg.MODEL.SMALL_CNN.OUT_FEATURES = ["stage3"]
