"""The learning rate of each update: a pure function of (config, step, steps per epoch).

Every trainer takes update ``t``'s hyperparameters from :meth:`LrSchedule.hyper` (steps are
numbered from 1 across epochs, as everywhere): the serial references, the stepwise and local
SGD drivers, the lockstep ranks and Ray's workers. The value is computed in Python floats
(float64) from the config alone and reaches the arithmetic only through
:func:`otpnn.model.sgd_update`, which casts it the same way for every trainer: a schedule keeps
the guarantee that the bits do not depend on the number or kind of workers, faults or resumes.

With ``lr`` the config's rate, ``e(t)`` the epoch of update ``t`` (from 1), ``T`` the run's
last step (epochs x steps per epoch) and ``W`` the warm-up steps:

- ``constant``: ``lr``; with no warm-up this is the very ``Hyper`` of a run without a schedule
  (the same bits as before schedules existed);
- ``step``: ``lr * gamma ** ((e(t) - 1) // N)``: multiplied by ``gamma`` every ``N`` epochs
  (PyTorch's ``StepLR`` stepped once an epoch);
- ``cosine``: ``lr_min + (lr - lr_min) * (1 + cos(pi * (t - W - 1) / (T - W))) / 2`` after the
  warm-up (``lr`` during it): ``lr`` at the first update after the warm-up, down to ``lr_min``
  at the end of the run, the last update just above it (PyTorch's ``CosineAnnealingLR`` with
  ``T_max = T - W``). Its shape depends on ``T``, so a cosine run cannot be resumed with
  another number of epochs;
- warm-up (any schedule): update ``t <= W`` takes ``t / W`` of the schedule's value, a linear
  ramp whose first update is not wasted at 0 and whose ``W``-th reaches the full value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from otpnn.config import TrainConfig
from otpnn.model import Hyper


@dataclass(frozen=True, slots=True)
class LrSchedule:
    """The hyperparameters of every update of a run (small and picklable: it travels in the
    workers' messages, so each computes the rate of the steps it updates itself)."""

    base: Hyper  # lr: the peak rate; momentum and weight decay, constant
    kind: str = "constant"
    steps_per_epoch: int = 1
    total_steps: int = 1  # T: the run's last step
    step_epochs: int = 1
    gamma: float = 0.1
    lr_min: float = 0.0
    warmup_steps: int = 0

    @classmethod
    def of(cls, cfg: TrainConfig, steps_per_epoch: int) -> LrSchedule:
        """The schedule of ``cfg`` for a dataset of ``steps_per_epoch`` batches an epoch."""
        return cls(
            Hyper(cfg.lr, cfg.momentum, cfg.weight_decay),
            cfg.lr_schedule,
            steps_per_epoch,
            steps_per_epoch * cfg.epochs,
            cfg.lr_step_epochs,
            cfg.lr_gamma,
            cfg.lr_min,
            cfg.lr_warmup_steps,
        )

    def lr(self, step: int) -> float:
        """The learning rate of update ``step`` (from 1)."""
        if step < 1:
            raise ValueError(f"steps are numbered from 1, not {step}")
        lr = self.base.lr
        if self.kind == "step":
            epoch = (step - 1) // self.steps_per_epoch + 1
            lr = lr * self.gamma ** ((epoch - 1) // self.step_epochs)
        elif self.kind == "cosine":
            done = max(0, step - self.warmup_steps - 1)
            span = max(1, self.total_steps - self.warmup_steps)
            lr = self.lr_min + (lr - self.lr_min) * (1 + math.cos(math.pi * done / span)) / 2
        if step <= self.warmup_steps:
            lr = lr * step / self.warmup_steps
        return lr

    def hyper(self, step: int) -> Hyper:
        """The hyperparameters of update ``step`` (from 1)."""
        if self.kind == "constant" and step > self.warmup_steps:
            return self.base
        lr = self.lr(step)
        if lr == self.base.lr:
            return self.base
        return Hyper(lr, self.base.momentum, self.base.weight_decay)  # (replace() is slower)
