"""A Lightning callback that kills its own process (SIGKILL) once training reaches a step.

tests/test_faults.py passes it to train.py as ``+callbacks.kill={_target_:tests.kill_at_step.
KillAtStep,step:K}``: no exception handler, no final checkpoint, exactly like a killed job.
"""

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    """SIGKILL the process before the optimizer step after ``step`` (that step's checkpoint is
    written: ModelCheckpoint runs at the end of the step)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
