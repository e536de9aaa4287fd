"""ResNet-18/34/50 on Fashion-MNIST: model, configuration, training, run store and analysis."""

import os

# Set before TensorFlow is first imported (see data/__init__.py for why oneDNN is forced on).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
