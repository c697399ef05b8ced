"""Compatibility import path: models registered before the restructure carry a pyfunc file that
imports `kickvision.inference.ShoePredictor` (see kickvision/bundle.py). New code imports
`kickvision.serve.predictor`."""

from kickvision.serve.predictor import ShoePredictor

__all__ = ["ShoePredictor"]
