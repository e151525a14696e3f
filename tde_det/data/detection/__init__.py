"""Detection data: LVIS v0.5 / v1.0 (Detectron2's built-in names under ``$DETECTRON2_DATASETS``)
and users' own LVIS-format datasets, loaded with annotation checks (see :mod:`.lvis`)."""
from .mapper import CheckedDatasetMapper, MapSkippingUnreadable
from .lvis import (
    INVALID_ANNOTATION_POLICIES,
    InvalidAnnotationError,
    check_invalid_annotation_policy,
    load_lvis_json_checked,
    register_lvis_dataset,
    register_lvis_datasets_from_config,
    set_invalid_annotation_policy,
    use_checked_loader_for_builtin_lvis,
)
from .lvis_api_fields import check_lvis_api_fields

use_checked_loader_for_builtin_lvis()

__all__ = [k for k in globals() if not k.startswith("_")]
