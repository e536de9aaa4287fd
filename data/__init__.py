"""Fashion-MNIST: reading the IDX files and tf.data input pipelines."""

import os

from data import quiet

# Set before TensorFlow is first imported. TensorFlow turns its oneDNN kernels on by default only on
# some Intel CPUs; elsewhere (AMD EPYC here) convolution gradients fall back to kernels that train
# ResNet-50 at 28x28 about 8x slower (measured: 16 vs 125 images/s). TF_CPP_MIN_LOG_LEVEL hides
# TensorFlow's C++ log lines once its logging is set up; what it prints before that (CUDA probing,
# oneDNN and CPU-feature notes) is captured by data/quiet.py, whose import hook wraps the first
# `import tensorflow` wherever it happens. Users can still override both variables.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
quiet.install()
