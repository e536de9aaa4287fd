"""ResNet-18/34/50 on Fashion-MNIST: model, configuration, training, run store and analysis."""

# TensorFlow's environment (oneDNN on, start-up chatter captured: data/quiet.py) must be set before
# TensorFlow is first imported; the data package does that, in one place, when it is imported.
import data  # noqa: F401
