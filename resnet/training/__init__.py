"""Training: the trainer and the processes around it.

Holds the trainer (``trainer``: prepare a run, train it epoch by epoch into the store), the messages a
training child writes and the job manager reads (``protocol``: importable without Keras), the one
background job of a process (``jobs``), the spare child that has imported TensorFlow before a job needs
it (``spare``), the child itself (``worker``: ``python -m resnet.training.worker``) and the export of
runs to TensorBoard (``tensorboard_export``: event files, and Projector features from a checkpoint). It may import
``resnet.store``, ``resnet.core`` and the leaves; never ``resnet.sweeps``, the CLI or the app. The app
uses ``jobs`` and ``protocol`` only, never ``trainer`` (it imports Keras) or ``worker``; the sweeps and
the CLI train with ``prepare_training`` and ``train_prepared``.
"""
