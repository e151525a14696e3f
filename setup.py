#!/usr/bin/env python
"""tde-det: TDE (Tang et al., NeurIPS 2020) as a Detectron2 project.

Detectron2 itself is deliberately not listed in ``install_requires``: it is not on PyPI under its
own name. ``install.sh`` installs it (or keeps a compiled one already present); see README.md.
"""
from setuptools import find_packages, setup

setup(
    name="tde-det",
    version="0.1.0",
    description="Total-Direct-Effect long-tailed recognition for Detectron2 "
                "(detection and classification)",
    license="Apache-2.0",
    python_requires=">=3.8",
    packages=find_packages(include=["tde_det", "tde_det.*"]),
    install_requires=["torch", "torchvision", "fvcore", "pycocotools", "lvis", "matplotlib"],
    extras_require={"test": ["pytest", "pytest-xdist"]},
)
