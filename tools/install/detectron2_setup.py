"""setup.py used by install.sh to package Detectron2's Python sources (PyPI's sdist
``pb1-detectron2==0.6``, or a source tree such as Detectron2 main) as an ordinary ``detectron2``
distribution, without compiling anything and with ``detectron2/_C.py`` (tde-det's stand-in) added.

It is copied next to the unpacked sources as ``setup.py``; ``pip install`` then builds and
installs a wheel, so ``pip show detectron2`` and ``pip uninstall detectron2`` work as usual.
``TDE_D2_VERSION`` (set by install.sh) is the version: ``0.6+nocsrc`` for 0.6, or
``<__version__>+git<commit>.nocsrc`` for a source tree.
"""
import os

from setuptools import find_packages, setup

VERSION = os.environ.get("TDE_D2_VERSION", "0.6+nocsrc")

# Detectron2's sub-projects that upstream installs under ``detectron2.projects`` (0.6's sdist
# has them; a source tree may not).
PROJECTS = {
    name: path
    for name, path in {
        "detectron2.projects.point_rend": "projects/PointRend/point_rend",
        "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
        "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
    }.items()
    if os.path.isdir(path)
}

# Detectron2's own requirements. 0.6 needs upper bounds on today's releases (see README: Pillow 10
# removed Image.LINEAR, numpy 1.24 removed np.bool, setuptools 81 removed pkg_resources); black is
# left out there, only LazyConfig.save's pretty-printing uses it. Main states its own bounds.
COMMON = ["matplotlib", "pycocotools>=2.0.2", "termcolor>=1.1", "yacs>=0.1.8", "tabulate",
          "cloudpickle", "tqdm>4.29.0", "tensorboard", "fvcore>=0.1.5,<0.1.6",
          "iopath>=0.1.7,<0.1.10", "hydra-core>=1.1"]
if VERSION == "0.6+nocsrc":
    REQUIRES = COMMON + ["Pillow>=7.1,<10", "numpy<1.24", "setuptools<81", "omegaconf>=2.1"]
else:
    REQUIRES = COMMON + ["Pillow>=7.1", "omegaconf>=2.1,<2.4", "black", "packaging"]

setup(
    name="detectron2",
    version=VERSION,  # local label: Python sources only, no compiled ops (a stand-in _C)
    description="Detectron2's Python sources without compiled ops, packaged by tde-det",
    url="https://github.com/facebookresearch/detectron2",
    license="Apache-2.0",
    packages=find_packages(include=["detectron2", "detectron2.*"]) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.6",
    install_requires=REQUIRES,
)
