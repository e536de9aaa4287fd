"""Sweeps: a named list of ordinary runs over a grid of settings, trained in order here or on Ray.

A sweep is the seed study made first-class: values per parameter expand to a grid of configurations
(``grid``), each configuration (a *trial*) becomes an ordinary run in the run cache, and the record
keeps which run belongs to which trial, in order (``record``). What a trial trains and how it ended is
``trials``'; the executors train them: here, one after another (``local``), or as Ray tasks on a
cluster (``on_ray``, the driver, and ``ray_task``, what runs on a Ray worker: the optional extra). ``report`` says what a sweep found (table, Pareto front,
budget sentence, time).

This package may import ``resnet.training``, ``resnet.store``, ``resnet.core`` and the leaves; the CLI
and the app import it. Training is ``prepare_training`` + ``train_prepared`` of the trainer, nothing else.

    python -m resnet sweep --name study --epochs 5,10,20 --batch-size 64,128
    python -m resnet sweeps
"""
