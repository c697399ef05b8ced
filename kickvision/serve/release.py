"""What a trained model carries when it leaves training: catalog index, temperature, continual state."""

from __future__ import annotations

from kickvision.config import ContinualConfig
from kickvision.data.prepare import PreparedData
from kickvision.evaluate.calibration import calibrate_temperature
from kickvision.model.bundle import ModelBundle
from kickvision.model.index import index_catalog
from kickvision.train.replay import continual_state_after_training


def equip_for_release(
    bundle: ModelBundle, data: PreparedData, continual: ContinualConfig, seed: int
) -> dict[str, float]:
    """Attach (in place) everything registration, serving and the next update need; returns metrics.

    - the recommendation index of the whole catalog (served with the model);
    - the temperature fitted on validation, kept only if it lowers ECE;
    - Fisher diagonal, replay exemplars, holdout and validation memory, so an update never needs this
      catalog again.
    """
    bundle.index = index_catalog(bundle.model, data)
    metrics = calibrate_temperature(bundle, data)
    bundle.continual = continual_state_after_training(bundle.model, data, continual, seed)
    return {
        **metrics,
        "index_products": len(bundle.index),
        "replay_exemplars": len(bundle.continual.replay),
        "replay_stored_bytes": bundle.continual.replay.stored_bytes(),
        "holdout_products": len(bundle.continual.holdout),
        "validation_memory_products": len(bundle.continual.validation or ()),
    }
