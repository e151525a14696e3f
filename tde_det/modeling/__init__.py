"""Models of tde-det. Importing this registers them in Detectron2's registries."""
from . import backbone as _backbone  # noqa: F401  (registration)
from . import meta_arch as _meta_arch  # noqa: F401  (registration)
from . import roi_heads as _roi_heads  # noqa: F401  (registration)
