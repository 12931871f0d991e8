"""The diagnostic rules on synthetic histories: each fires on the pattern it names, with its evidence,
and stays quiet on a healthy run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from studio.training import diagnostics as dg


def healthy(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n + 1)
    loss = 2.0 * np.exp(-steps / 40) + 0.02 + rng.normal(0, 0.01, n)
    return steps, loss


def test_a_healthy_run_gets_no_hint():
    steps, loss = healthy()
    val_steps = steps[19::20]
    val_loss = loss[19::20] + 0.05
    hints = dg.diagnose(train_steps=steps, train_loss=loss, val_steps=val_steps, val_loss=val_loss,
                        status="completed", dead_fraction={"relu1": 0.1}, grad_norms={"conv1": 0.5, "fc": 1.2},
                        layer_order=["conv1", "fc"])
    assert hints == []


def test_overfitting_needs_val_rising_while_train_falls():
    steps, loss = healthy()
    val_steps = np.arange(20, 201, 20)
    val_loss = np.array([1.0, 0.7, 0.5, 0.45, 0.47, 0.52, 0.58, 0.66, 0.74, 0.85])
    (hint,) = dg.overfitting(steps, loss, val_steps, val_loss)
    assert hint.kind == "overfitting" and hint.severity == "warning"
    assert "lowest at step 80 (0.45)" in hint.evidence and "0.85 at step 200" in hint.evidence
    # the same validation curve while the training loss rises too is not overfitting
    assert dg.overfitting(steps, loss[::-1], val_steps, val_loss) == []
    # a validation loss that only wobbles around its best is not either
    assert dg.overfitting(steps, loss, val_steps, np.array([1.0, .7, .5, .45, .46, .45, .455, .45, .46, .452])) == []


def test_divergence_names_the_step_of_the_first_nan():
    steps = np.arange(1, 11)
    loss = np.array([2.0, 1.9, 3.0, 9.0, 80.0, math.inf, math.nan, math.nan, math.nan, math.nan])
    (hint,) = dg.learning_rate(steps, loss, lr=1.0)
    assert hint.kind == "lr_too_high" and hint.title == "Training diverged"
    assert "inf at step 6" in hint.evidence and "lr=1" in hint.message
    (hint,) = dg.learning_rate([], [], status="diverged", error="the training loss became nan at step 3")
    assert "step 3" in hint.evidence


def test_oscillating_and_rising_losses_point_at_the_learning_rate():
    steps = np.arange(200)
    rng = np.random.default_rng(1)
    oscillating = 1.0 + rng.uniform(-0.9, 0.9, 200)
    (hint,) = dg.learning_rate(steps, oscillating)
    assert hint.title == "Loss oscillates" and "median step-to-step change" in hint.evidence
    rising = np.linspace(1.0, 3.0, 200)
    (hint,) = dg.learning_rate(steps, rising)
    assert hint.title == "Loss went up"
    assert dg.learning_rate(*healthy()) == []


def test_plateau_fires_on_a_flat_high_loss_but_not_on_a_converged_one():
    steps = np.arange(300)
    flat = np.concatenate([np.linspace(2.3, 1.6, 60), np.full(240, 1.6)])
    (hint,) = dg.plateau(steps, flat)
    assert hint.kind == "plateau" and hint.severity == "info"
    converged = np.concatenate([np.linspace(2.3, 0.01, 60), np.full(240, 0.01)])
    assert dg.plateau(steps, converged) == []
    assert dg.plateau(*healthy()) == []


def test_dead_relus_over_the_threshold_are_listed_worst_first():
    (hint,) = dg.dead_relus({"relu1": 0.2, "relu2": 0.75, "relu3": 0.95}, step=40)
    assert hint.evidence == "dead units at step 40: relu3 95%, relu2 75% (threshold 50%)."
    assert dg.dead_relus({"relu1": 0.49}) == []


@pytest.mark.parametrize("norms,kind", [
    ({"conv1": 1e-9, "fc": 0.3}, "vanishing_gradients"),
    ({"conv1": 2e-5, "fc": 0.5}, "vanishing_gradients"),   # first/last ratio 4e-5
    ({"conv1": 5e3, "fc": 0.5}, "exploding_gradients"),
    ({"conv1": math.inf, "fc": math.nan}, "exploding_gradients"),
])
def test_gradient_rules(norms, kind):
    hints = dg.gradients(norms, ["conv1", "fc"], step=10)
    assert [h.kind for h in hints] == [kind]
    assert "conv1" in hints[0].evidence


def test_diagnose_puts_warnings_first_and_skips_plateau_when_the_lr_is_the_problem():
    steps = np.arange(300)
    flat = np.concatenate([np.linspace(2.3, 1.6, 60), np.full(240, 1.6)])
    hints = dg.diagnose(train_steps=steps, train_loss=flat, dead_fraction={"relu1": 0.9})
    assert [h.kind for h in hints] == ["dead_relu", "plateau"]
    diverged = dg.diagnose(train_steps=steps, train_loss=np.r_[flat[:-1], np.nan], status="diverged")
    assert [h.kind for h in diverged] == ["lr_too_high"]
