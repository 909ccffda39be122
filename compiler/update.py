"""The parameter update as graph nodes, so the optimizer's arithmetic is part
of the one compiled step (scheduled, and later fused, with the rest).

Learning rate and momentum enter as `hyper` leaves: schedules change them
between steps without recompiling.
"""
from __future__ import annotations

from .graph import Graph, Node


def sgd_updates(G: Graph, params: list[Node], grads: list[Node], scales: dict[str, float],
                momentum: bool, nesterov: bool) -> list[tuple[Node, Node]]:
    """SGD: w <- w - eps_w g; with momentum v <- mu v - eps_w g, w <- w + v
    (Nesterov: w <- w + mu v - eps_w g) [EB 4.7, PR 3.1]."""
    lr = G("hyper", name="lr", shape=(), dtype=G.float_dtype)
    mu = G("hyper", name="momentum", shape=(), dtype=G.float_dtype) if momentum else None
    updates = []
    for p, g in zip(params, grads):
        scale = scales.get(p.name, 1.0)
        if scale == 0:
            continue  # frozen
        step = G("mul", G("mul", lr, scale) if scale != 1 else lr, g)
        if mu is None:
            updates.append((p, G("sub", p, step)))
            continue
        v = G("state", name=f"{p.name}.velocity", shape=p.shape, dtype=p.dtype, init={"dist": "constant", "value": 0.0})
        v_new = G("sub", G("mul", mu, v), step)
        updates.append((v, v_new))
        p_new = G("sub", G("add", p, G("mul", mu, v_new)), step) if nesterov else G("add", p, v_new)
        updates.append((p, p_new))
    return updates
