"""Explainable audio classification: SpeechBrain-style recipes and a shared core."""

from setuptools import find_packages, setup

CORE_REQUIREMENTS = [
    "speechbrain==1.1.2",
    "torch==2.11.0",
    "torchaudio==2.11.0",
    "torchvision==0.26.0",
    "hyperpyyaml",
    "sentencepiece",
    "huggingface_hub",
    "scikit-learn",
    "matplotlib",
    "soundfile",
    "numpy",
]

setup(
    name="xaudio-recipes",
    version="0.1.0",
    description="Explainable audio classification: recipes that train audio classifiers and explain them",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["common", "common.*"]),
    package_data={"common.data": ["gtzan_splits/*.txt", "gtzan_splits/README.md"]},
    python_requires=">=3.10",
    install_requires=CORE_REQUIREMENTS,
    license="Apache-2.0",
)
