"""The divergence watch flags blow-ups, not the swings of a stable method near a minimum."""
import math

from netc.runtime.divergence import WARMUP, DivergenceWatch, WatchState


def _watch(initial=1.0, best=1e-3):
    return WatchState(initial=initial, best_epoch_loss=best)


def test_an_epoch_that_swings_10x_below_the_start_is_healthy():
    # heavy-ball momentum at its largest stable rate: 1e-3 -> 2e-2, still far below the start
    assert DivergenceWatch.healthy_epoch(_watch(), 2e-2)


def test_an_epoch_above_the_start_and_10x_the_best_is_a_blow_up():
    assert not DivergenceWatch.healthy_epoch(_watch(), 1.5)
    assert not DivergenceWatch.healthy_epoch(_watch(), math.inf)
    assert not DivergenceWatch.healthy_epoch(_watch(), math.nan)


def _smoothed(losses):
    ws = WatchState()
    return [DivergenceWatch.exploded(ws, v) for v in losses]


def test_smoothed_loss_swinging_below_the_start_does_not_trigger():
    losses = [1.0] + [1e-4] * (WARMUP + 400) + [3e-2] * 200  # 300x the floor, below the start
    assert not any(_smoothed(losses))


def test_smoothed_loss_climbing_past_the_start_triggers():
    losses = [1.0] + [1e-2] * (WARMUP + 400) + [5.0] * 200
    assert any(_smoothed(losses))
