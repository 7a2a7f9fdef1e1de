"""SCAFFOLD's math (Karimireddy et al., 2020, option II), shared by the institution's round
(node/round.py) and the server strategy (strategies/scaffold.py)."""

from __future__ import annotations

from fedsilo.arrays import Arrays


def server_update(x: Arrays, c: Arrays, delta_y: list[Arrays], delta_c: list[Arrays],
                  server_lr: float, num_total: int) -> tuple[Arrays, Arrays]:
    """x <- x + server_lr * mean(dy);  c <- c + (|S| / N) * mean(dc)  (unweighted means)."""
    s = len(delta_y)
    new_x = {k: x[k] + server_lr * sum(d[k] for d in delta_y) / s for k in x}
    new_c = {k: c[k] + (s / num_total) * sum(d[k] for d in delta_c) / s for k in c}
    return new_x, new_c


def client_variate(c_i: Arrays, c: Arrays, x: Arrays, y: Arrays, steps: int,
                   lr: float, lr_sum: dict[str, float] | None = None) -> Arrays:
    """Option II: c_i+ = c_i - c + (x - y_i) / (K * lr), K local steps of size lr.
    ``lr_sum`` (by array name) replaces K * lr where the steps had other sizes (encoder
    weights at their own rate, warm-up)."""
    return {k: c_i[k] - c[k] + (x[k] - y[k]) / (steps * lr if lr_sum is None else lr_sum[k])
            for k in x}
