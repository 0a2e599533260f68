"""The learned pool of the two heads: it learns to ignore a modality that does not help."""

from __future__ import annotations

import numpy as np
import torch

from bci_affect.uncertainty.fusion import FusionPool, fit_pool, opinion_from_probs, pool_logits


def _heads(n: int, informative_eeg: bool, seed: int = 0):
    """Face head right ~78 % of the time; EEG head more confident and either informative
    (independent errors; surer when right, as real heads are) or pure noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)

    def head(acc: float, sharp: float, informative: bool) -> torch.Tensor:
        guess = np.where(rng.random(n) < acc, y, rng.integers(0, 4, n))
        if not informative:
            guess = rng.integers(0, 4, n)
        surer = np.where(guess == y, 1.5, 0.7) if informative else 1.0
        logits = rng.normal(0, 0.3, (n, 4))
        logits[np.arange(n), guess] += sharp * surer * rng.lognormal(0, 0.3, n)
        return torch.log_softmax(torch.as_tensor(logits, dtype=torch.float32), -1)

    return head(0.7, 1.5, True), head(0.6, 3.0, informative_eeg), torch.as_tensor(y)


def _nll(log_t, log_s, w, b, y) -> float:
    s = pool_logits(log_t, log_s, torch.ones(len(y)), torch.ones(len(y)), w, b)
    return float(torch.nn.functional.cross_entropy(s, y))


def _fit(log_t, log_s, y) -> tuple[torch.Tensor, torch.Tensor]:
    """The pool's exponents and bias fitted from the untrained pool (lightly pulled)."""
    ones = torch.ones(len(y))
    raw, bias = fit_pool(
        log_t, log_s, ones, ones, y, raw_init=torch.full((2,), FusionPool.RAW_ONE),
        bias_init=torch.zeros(4), l2=1e-3,
    )  # fmt: skip
    return FusionPool.weights(raw), bias


def test_an_uninformative_modality_gets_no_weight_and_does_no_harm():
    log_t, log_s, y = _heads(2000, informative_eeg=False)
    w, bias = _fit(log_t, log_s, y)
    assert w[1] < 0.1 * w[0]
    # on fresh windows: the fused log-loss is no worse than the face head's alone (well
    # calibrated), while the untrained product of the two heads is far worse
    log_t2, log_s2, y2 = _heads(2000, informative_eeg=False, seed=1)
    face_alone = float(torch.nn.functional.nll_loss(log_t2, y2))
    fused = _nll(log_t2, log_s2, w, bias, y2)
    naive = _nll(log_t2, log_s2, torch.ones(2), torch.zeros(4), y2)
    assert fused <= face_alone + 0.01 and naive > face_alone + 0.2


def test_an_informative_modality_is_used_and_beats_either_alone():
    log_t, log_s, y = _heads(2000, informative_eeg=True)
    ones = torch.ones(len(y))
    w, bias = _fit(log_t, log_s, y)
    assert w[1] > 0.2
    log_t2, log_s2, y2 = _heads(2000, informative_eeg=True, seed=1)
    fused = torch.softmax(pool_logits(log_t2, log_s2, ones, ones, w, bias), -1)
    acc = float((fused.argmax(-1) == y2).float().mean())
    assert acc > float((log_t2.argmax(-1) == y2).float().mean())
    assert acc > float((log_s2.argmax(-1) == y2).float().mean())


def test_the_opinion_keeps_the_probabilities_and_ranks_like_max_p():
    p = torch.softmax(torch.randn(50, 4) * 2, -1)
    alpha, u = opinion_from_probs(p)
    torch.testing.assert_close(alpha / alpha.sum(-1, keepdim=True), p)
    order_u = torch.argsort(u)
    order_p = torch.argsort(-p.amax(-1))
    torch.testing.assert_close(u[order_u], u[order_p])  # same ranking as 1 - max p
    assert float(opinion_from_probs(torch.full((1, 4), 0.25))[1]) == 1.0


def test_the_pool_that_does_no_harm_is_chosen_by_held_out_trials():
    from bci_affect.uncertainty.fusion import select_pool

    log_t, log_s, y = _heads(1200, informative_eeg=False, seed=3)
    ones = torch.ones(len(y))
    trials = np.repeat(np.arange(40), 30)  # 40 trials of 30 windows
    raw, bias, info = select_pool(
        log_t, log_s, ones, ones, y, trials, raw_init=torch.full((2,), FusionPool.RAW_ONE),
        bias_init=torch.zeros(4),
    )  # fmt: skip
    assert info["choice"] == "face" and info["n_groups"] == 40
    assert float(FusionPool.weights(raw)[1]) < 1e-6  # the noise head is left out entirely
    assert info["cv_log_loss"]["face"] < info["cv_log_loss"]["both"]
    log_t, log_s, y = _heads(1200, informative_eeg=True, seed=4)
    _, _, info = select_pool(
        log_t, log_s, ones, ones, y, trials, raw_init=torch.full((2,), FusionPool.RAW_ONE),
        bias_init=torch.zeros(4),
    )  # fmt: skip
    assert info["choice"] == "both"
    # two trials: nothing to choose with, both heads are pooled
    _, _, info = select_pool(
        log_t[:60], log_s[:60], ones[:60], ones[:60], y[:60], trials[:60],
        raw_init=torch.full((2,), FusionPool.RAW_ONE), bias_init=torch.zeros(4),
    )  # fmt: skip
    assert info["choice"] == "both" and np.isnan(info["cv_log_loss"]["face"])


def test_a_head_that_helps_only_by_chance_on_a_few_trials_is_left_out():
    """An EEG head at chance whose confident guesses are shared by a trial's windows can make
    the pool look better on a handful of held-out trials; the one-standard-error rule keeps
    the face alone unless pooling wins clearly."""
    from bci_affect.uncertainty.fusion import select_pool

    picked, lowest_cv = [], []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        n_trials, per = 6, 20
        trials = np.repeat(np.arange(n_trials), per)
        n = trials.size
        y = rng.integers(0, 4, n_trials)[trials]
        face = np.where(rng.random(n) < 0.6, y, rng.integers(0, 4, n))
        lf = rng.normal(0, 0.3, (n, 4))
        lf[np.arange(n), face] += 1.5
        eeg = rng.integers(0, 4, n_trials)[trials]  # one random guess per trial
        le = rng.normal(0, 0.3, (n, 4))
        le[np.arange(n), eeg] += 2.0
        ones = torch.ones(n)
        _, _, info = select_pool(
            torch.log_softmax(torch.as_tensor(lf, dtype=torch.float32), -1),
            torch.log_softmax(torch.as_tensor(le, dtype=torch.float32), -1),
            ones, ones, torch.as_tensor(y), trials,
            raw_init=torch.full((2,), FusionPool.RAW_ONE), bias_init=torch.zeros(4),
        )  # fmt: skip
        picked.append(info["choice"])
        cv = info["cv_log_loss"]
        lowest_cv.append(min(cv, key=lambda k: cv[k]))
    assert lowest_cv.count("both") >= 1  # the lowest held-out loss alone is fooled ...
    assert picked.count("both") == 0  # ... the rule is not
