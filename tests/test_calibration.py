import numpy as np

from kickvision.evaluate.calibration import expected_calibration_error, fit_temperature, plot_reliability, softmax


def _overconfident(n=4000, classes=4, seed=0):
    """Logits whose softmax is far more confident than the 70% accuracy they achieve."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    predicted = np.where(rng.random(n) < 0.7, labels, rng.integers(0, classes, n))
    logits = rng.normal(0, 0.5, (n, classes))
    logits[np.arange(n), predicted] += 6.0
    return logits, labels


def test_ece_is_zero_for_a_calibrated_and_large_for_an_overconfident_model():
    probs = np.array([[0.75, 0.25]] * 400)
    labels = np.array([0] * 300 + [1] * 100)
    assert expected_calibration_error(probs, labels) < 1e-9
    logits, labels = _overconfident()
    assert expected_calibration_error(softmax(logits), labels) > 0.2


def test_temperature_scaling_softens_an_overconfident_model_and_lowers_ece():
    logits, labels = _overconfident()
    temperature = fit_temperature(logits, labels)
    assert temperature > 1.5
    assert expected_calibration_error(softmax(logits, temperature), labels) < 0.05


def test_reliability_diagram_is_written(tmp_path):
    logits, labels = _overconfident(200)
    assert plot_reliability(softmax(logits), labels, tmp_path / "r.png").stat().st_size > 0


def test_the_review_threshold_accepts_the_longest_confident_prefix_that_meets_the_accuracy():
    from kickvision.evaluate.calibration import review_threshold

    confidence = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    right = np.array([1, 1, 1, 0, 1, 0], bool)  # accuracy of the top 1..6: 1, 1, 1, .75, .8, .67
    probabilities = np.stack([confidence, 1 - confidence], 1)
    labels = np.where(right, 0, 1)
    assert review_threshold(probabilities, labels, accuracy=0.8) == 0.7
    assert review_threshold(probabilities, labels, accuracy=0.98) == 0.9
    assert review_threshold(probabilities, np.ones(6, int), accuracy=0.98) == 1.0  # never right: review all
    assert review_threshold(probabilities[:0], labels[:0]) == 1.0
