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
    license="Apache-2.0",
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
        # pytest-xdist: tests/run.sh spreads the test files over two
        # processes (one process keeps only one of two cores busy).
        # matplotlib: the dataset doctor's and the evaluation's plots (they
        # skip without it, which CI must not; demo.sh installs [plots]).
        "test": ["pytest>=7", "pytest-timeout", "pytest-xdist", "tf2onnx",
                 "onnxruntime", "matplotlib"],
        "export": ["tf2onnx", "onnxruntime", "ai-edge-litert"],
        "plots": ["matplotlib"],
    },
    # The commands a clone runs as scripts (main.py, model_inspect.py,
    # dataset/*.py, which call the same functions), so that `pip install`
    # users have them too.
    entry_points={
        "console_scripts": [
            "efficientdet-train = efficientdet_tf.cli.train:main",
            "efficientdet-inspect = efficientdet_tf.cli.model_inspect:main",
            "efficientdet-convert-coco = "
            "efficientdet_tf.cli.create_coco_tfrecord:main",
            "efficientdet-convert-voc = "
            "efficientdet_tf.cli.create_pascal_tfrecord:main",
            "efficientdet-inspect-records = "
            "efficientdet_tf.cli.inspect_tfrecord:main",
            "efficientdet-demo-data = efficientdet_tf.cli.make_demo_dataset:main",
            "efficientdet-voc-to-coco = efficientdet_tf.cli.voc_to_coco:main",
            "efficientdet-analyze-dataset = "
            "efficientdet_tf.cli.analyze_dataset:main",
            "efficientdet-split-kfold = efficientdet_tf.cli.split_kfold:main",
        ],
    },
)
