from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
version = next(
    line.split('"')[1]
    for line in (ROOT / "vsrife" / "__init__.py").read_text().splitlines()
    if line.startswith("__version__")
)

setup(
    name="vsrife",
    version=version,
    description="RIFE frame interpolation for VapourSynth, on CUDA or on the CPU",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.12",
    # The weights registry lives in the top-level weights/ folder and ships inside the package.
    packages=["vsrife", "vsrife.registry"],
    package_dir={"vsrife.registry": "weights"},
    package_data={"vsrife.registry": ["*.json"]},
    install_requires=[
        "vapoursynth>=74",
        "torch>=2.4",
        "numpy>=1.26",
        "vsutil>=0.8",
        "safetensors>=0.4",
    ],
    extras_require={
        "test": ["pytest>=8"],
        "sources": ["vapoursynth-bestsource", "vapoursynth-lsmas"],
        "quality": ["vapoursynth-vszip", "vapoursynth-mvtools", "matplotlib"],
    },
    entry_points={"console_scripts": ["vsrife = vsrife.cli:main"]},
)
