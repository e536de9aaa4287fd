"""Training: the trainer and the processes around it.

Holds the trainer (``trainer``: prepare a run, train it epoch by epoch into the store), the one
background job of a process and its spare child (``jobs``) and the child itself (``worker``:
``python -m resnet.training.worker``). It may import ``resnet.store``, ``resnet.core`` and the leaves;
never ``resnet.sweeps``, the CLI or the app. ``trainer`` and ``worker`` are private to this package.
"""
