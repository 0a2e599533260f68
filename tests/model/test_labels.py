"""Label schemes and the circumplex prior."""

import numpy as np
import pytest

from bci_affect.core.errors import ConfigError
from bci_affect.models.teacher import (
    EXPRESSIONS,
    LABEL_SCHEMES,
    class_names,
    expression_prior_matrix,
    n_classes,
    rating_to_label,
    ratings_to_labels,
)


def test_quadrants_of_the_four_corners():
    v = np.array([2, 2, 8, 8])
    a = np.array([2, 8, 2, 8])
    labels = ratings_to_labels(v, a)
    assert labels.tolist() == [0, 1, 2, 3]
    assert [class_names()[i] for i in labels] == ["LVLA", "LVHA", "HVLA", "HVHA"]


def test_midpoint_counts_as_low_and_threshold_moves_it():
    assert rating_to_label(5, 5) == 0
    assert rating_to_label(5.01, 5) == 2
    assert rating_to_label(5, 5, threshold=4.5) == 3


@pytest.mark.parametrize("scheme", ["valence", "arousal"])
def test_binary_schemes_need_one_rating(scheme):
    kwargs = {scheme: [1, 9, 5, 6]}
    assert ratings_to_labels(**kwargs, scheme=scheme).tolist() == [0, 1, 0, 1]
    other = "arousal" if scheme == "valence" else "valence"
    with pytest.raises(ConfigError, match=f"needs {scheme}"):
        ratings_to_labels(**{other: [3]}, scheme=scheme)


@pytest.mark.parametrize("bad", [0.5, 9.5, float("nan")])
def test_out_of_scale_ratings_are_refused(bad):
    with pytest.raises(ConfigError, match=r"within \[1, 9\]"):
        ratings_to_labels([3, bad], [3, 3])


def test_unknown_scheme():
    with pytest.raises(ConfigError, match="unknown label scheme 'dominance'"):
        ratings_to_labels(3, 3, scheme="dominance")


def test_broadcasting_and_dtype():
    out = ratings_to_labels([[2, 8]], 7)
    assert out.shape == (1, 2) and out.dtype == np.int64
    assert out.tolist() == [[1, 3]]


@pytest.mark.parametrize("scheme", sorted(LABEL_SCHEMES))
def test_prior_rows_are_distributions(scheme):
    m = expression_prior_matrix(scheme)
    assert m.shape == (7, n_classes(scheme))
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    assert (m > 0).all()
    neutral = m[EXPRESSIONS.index("neutral")]
    np.testing.assert_allclose(neutral, 1.0 / n_classes(scheme))


def test_prior_follows_the_circumplex():
    m = expression_prior_matrix("quadrant")
    best = {
        e: class_names()[int(np.argmax(m[i]))] for i, e in enumerate(EXPRESSIONS) if e != "neutral"
    }
    assert best == {
        "angry": "LVHA",
        "disgust": "LVHA",
        "fear": "LVHA",
        "happy": "HVHA",
        "sad": "LVLA",
        "surprise": "HVHA",
    }
    sharper = expression_prior_matrix("quadrant", sharpness=8.0)
    assert sharper.max() > m.max()
