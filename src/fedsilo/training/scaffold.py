"""SCAFFOLD's math (Karimireddy et al., 2020, option II), shared by the ClientApp and the
server strategy (strategies/scaffold.py)."""

from __future__ import annotations

import numpy as np

CONTROL_KEY = "scaffold-c"  # server -> client: the server control variate c
DELTA_C_KEY = "scaffold-dc"  # client -> server: c_i+ - c_i
STATE_KEY = "scaffold-ci"  # the client's own variate c_i, kept in its node state

Arrays = dict[str, np.ndarray]


def server_update(x: Arrays, c: Arrays, delta_y: list[Arrays], delta_c: list[Arrays],
                  server_lr: float, num_total: int) -> tuple[Arrays, Arrays]:
    """x <- x + server_lr * mean(dy);  c <- c + (|S| / N) * mean(dc)  (unweighted means)."""
    s = len(delta_y)
    new_x = {k: x[k] + server_lr * sum(d[k] for d in delta_y) / s for k in x}
    new_c = {k: c[k] + (s / num_total) * sum(d[k] for d in delta_c) / s for k in c}
    return new_x, new_c


def client_variate(c_i: Arrays, c: Arrays, x: Arrays, y: Arrays, steps: int,
                   lr: float) -> Arrays:
    """Option II: c_i+ = c_i - c + (x - y_i) / (K * lr), K local steps of size lr."""
    return {k: c_i[k] - c[k] + (x[k] - y[k]) / (steps * lr) for k in x}
