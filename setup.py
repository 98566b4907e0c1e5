from setuptools import setup

setup(
    name="ecf_engine",
    version="0.1.0",
    description="Learned image codec engine built around the Efficient Contextformer (eContextformer)",
    python_requires=">=3.10",
    packages=["ecf_engine", "ecf_engine.kernels", "ecf_engine.csrc"],
    package_dir={"ecf_engine": "ecf_engine", "ecf_engine.kernels": "kernels", "ecf_engine.csrc": "csrc"},
    package_data={"ecf_engine": ["weights/*.safetensors", "weights/manifest.json", "weights/retired.json", "weights/*.md", "data/*.png"],
                  "ecf_engine.csrc": ["*.c", "*.cpp", "*.cu", "*.md"]},          # compiled on first use (csrc/__init__.py)
    install_requires=["torch>=2.11", "numpy", "pillow", "constriction>=0.4", "safetensors", "tqdm", "ninja"],
    # triton: the CUDA kernels (and their CPU interpreter tests); CPU-only installs run without it
    extras_require={"gpu": ["triton; platform_system == 'Linux'"], "test": ["pytest", "pytest-benchmark"],
                    "bench": ["matplotlib", "pillow-heif", "imagecodecs"]},
    entry_points={"console_scripts": ["ecf = ecf_engine.cli:main"]},
)
