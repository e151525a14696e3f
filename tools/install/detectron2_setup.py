"""setup.py used by install.sh to package Detectron2 v0.6's Python sources (from the PyPI sdist
``pb1-detectron2==0.6``, which lacks ``layers/csrc``) as an ordinary ``detectron2`` distribution,
without compiling anything and with ``detectron2/_C.py`` (tde-det's stand-in) added.

It is copied next to the unpacked sources as ``setup.py``; ``pip install`` then builds and
installs a wheel, so ``pip show detectron2`` and ``pip uninstall detectron2`` work as usual.
"""
from setuptools import find_packages, setup

# Detectron2's sub-projects that upstream installs under ``detectron2.projects``.
PROJECTS = {
    "detectron2.projects.point_rend": "projects/PointRend/point_rend",
    "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
    "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}

setup(
    name="detectron2",
    # local label: Detectron2 0.6 Python sources, no compiled ops (a stand-in _C)
    version="0.6+nocsrc",
    description="Detectron2 v0.6 Python sources without compiled ops, packaged by tde-det",
    url="https://github.com/facebookresearch/detectron2",
    license="Apache-2.0",
    packages=find_packages(include=["detectron2", "detectron2.*"]) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.6",
    # Detectron2 0.6's own requirements, with the upper bounds 0.6 needs on today's releases
    # (see README: Pillow 10 removed Image.LINEAR, numpy 1.24 removed np.bool, setuptools 81
    # removed pkg_resources). black is left out: only LazyConfig.save's pretty-printing uses it.
    install_requires=[
        "Pillow>=7.1,<10",
        "numpy<1.24",
        "setuptools<81",
        "matplotlib",
        "pycocotools>=2.0.2",
        "termcolor>=1.1",
        "yacs>=0.1.8",
        "tabulate",
        "cloudpickle",
        "tqdm>4.29.0",
        "tensorboard",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "omegaconf>=2.1",
        "hydra-core>=1.1",
    ],
)
