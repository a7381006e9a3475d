"""efficientdet_tf: EfficientDet for TensorFlow 2 / Keras 3."""
from importlib import metadata

from setuptools import find_packages, setup


def _tensorflow_requirement() -> str:
    """Keep a GPU ``tensorflow`` the user already has; otherwise take the
    smaller CPU wheel (installing both would shadow one with the other)."""
    try:
        metadata.version("tensorflow")
        return "tensorflow>=2.21,<2.22"
    except metadata.PackageNotFoundError:
        return "tensorflow-cpu>=2.21,<2.22"


setup(
    name="efficientdet_tf",
    version="0.1.0",
    description="EfficientDet (TF2 / Keras 3) faithful to the official checkpoints",
    packages=find_packages(include=["efficientdet_tf", "efficientdet_tf.*"]),
    python_requires=">=3.10",
    install_requires=[
        _tensorflow_requirement(),
        "keras>=3.5",
        "numpy",
        "absl-py",
        "pyyaml",
        "pillow",
        "pycocotools",
    ],
    extras_require={
        # tf2onnx/onnxruntime so CI runs the ONNX export tests (they skip
        # without them). tensorflow-serving-api (TF Serving request protos,
        # tests/serving/test_export.py) is NOT listed: it requires `tensorflow`, which
        # pip would install beside tensorflow-cpu; install it with
        # `pip install --no-deps tensorflow-serving-api` (its test skips
        # without it).
        "test": ["pytest>=7", "pytest-timeout", "tf2onnx", "onnxruntime"],
        "export": ["tf2onnx", "onnxruntime", "ai-edge-litert"],
    },
)
