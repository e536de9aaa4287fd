"""A budget-curve branch: a new run that starts from a trunk's state at one epoch, then cools down.

``branch_run(store, trunk, config)`` creates an ordinary run of ``config`` (schedule ``wsd``, fixed length
``B + cooldown_for(B)``) whose first ``B`` epochs are the trunk's: its history rows, its feature maps and
its checkpoint and predictions at epoch ``B`` are copied in, and its one segment cools down over the
epochs after ``B``. The trunk must be exactly at epoch ``B`` (its checkpoint there is the one it keeps):
the budget curve creates the branch before the trunk trains on, so the checkpoint at a budget epoch
lives until its branch has it and is then superseded as usual. The state (the commit point) is written
last; a branch left without it (a kill while copying) has no epochs and is filled again by the next try.
"""

from __future__ import annotations

import shutil

from resnet.config import TrainConfig
from resnet.core.schedule import Segment
from resnet.store.run_folder import write_history
from resnet.store.run_state import checkpoint_name, map_name, predictions_name
from resnet.store.runs import Run, RunError, RunStatus, RunStore


def branch_name(trunk: Run, epoch: int) -> str:
    """What a branch's state records as its origin: ``<trunk run id>@<epoch>``."""
    return f"{trunk.run_id}@{epoch}"


def branch_run(store: RunStore, trunk: Run, config: TrainConfig, *, budget: int, into: Run | None = None) -> Run:
    """The branch of ``trunk`` at epoch ``budget`` training ``config`` (see the module docstring).

    ``into``: a branch created before but left without its epochs (filled again). RunError if the trunk
    is not at ``budget`` or is damaged.
    """
    if trunk.damaged or trunk.epochs_done != budget:
        raise RunError(
            f"run {trunk.run_id} is at epoch {trunk.epochs_done}, not {budget}: a branch starts from the "
            f"trunk's own checkpoint at its budget epoch"
        )
    state = trunk.state
    branch = into or store.create(
        config,
        precision=state.precision,
        device=state.device or "",
        train_images=state.train_images or 0,
        eval_images=state.eval_images or 0,
        branch_of=branch_name(trunk, budget),
    )
    names = [checkpoint_name(budget), predictions_name(budget)]
    names += [map_name(epoch) for epoch in range(1, budget + 1) if (trunk.path / map_name(epoch)).is_file()]
    for name in names:
        shutil.copyfile(trunk.path / name, branch.path / name)
    write_history(branch.path / "history.csv", trunk.history.iloc[:budget].to_dict("records"))
    store.update_state(
        branch,
        status=RunStatus.STOPPED,
        epochs_done=budget,
        target_epochs=config.epochs,
        segments=(Segment(1, config.epochs, config.epochs - budget),),
        checkpoint=checkpoint_name(budget),
        predictions=predictions_name(budget),
        message=f"branched from run {trunk.run_id} at epoch {budget}; its cooldown (epochs "
        f"{budget + 1}-{config.epochs}) is next",
    )
    return store.load(branch.run_id)
