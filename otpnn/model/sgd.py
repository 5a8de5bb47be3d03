"""SGD with optional momentum and L2 weight decay, on flat vectors, in place.

Update (PyTorch convention): g = grad_sum / batch_len + weight_decay * p;
v = momentum * v + g; p -= lr * v   (without momentum: p -= lr * g).
Every operation is element-wise in a fixed order, so the update is as deterministic as its inputs.
"""

from __future__ import annotations

import numpy as np


class SGD:
    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity: np.ndarray | None = None
        self._g: np.ndarray | None = None

    def step(self, params: np.ndarray, grad_sum: np.ndarray, batch_len: int) -> None:
        """Apply one update using the MEAN gradient grad_sum / batch_len."""
        if self._g is None or self._g.shape != params.shape or self._g.dtype != params.dtype:
            self._g = np.empty_like(params)
        g = self._g
        np.divide(grad_sum, batch_len, out=g)
        if self.weight_decay:
            g += self.weight_decay * params
        if self.momentum:
            if self.velocity is None:
                self.velocity = np.zeros_like(params)
            self.velocity *= self.momentum
            self.velocity += g
        np.multiply(self.velocity if self.momentum else g, self.lr, out=g)
        params -= g

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Tensors to checkpoint (the momentum buffer once it exists)."""
        return {} if self.velocity is None else {"velocity": self.velocity}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        unknown = set(arrays) - {"velocity"}
        if unknown:
            raise ValueError(f"unknown optimizer state {sorted(unknown)}; expected 'velocity'")
        v = arrays.get("velocity")
        self.velocity = None if v is None else np.array(v, copy=True)
