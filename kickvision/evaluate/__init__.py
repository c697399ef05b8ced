"""Evaluate: how good a model is and why it decides as it does.

- `metrics`: top-1, macro-F1, per-class table, confusion matrix, each modality alone, plots.
- `calibration`: ECE, temperature scaling, reliability diagram.
- `retrieval`: recommendation quality; `update`: forgetting and new-category accuracy of an update.
- `cam`: each image branch's map (Grad-CAM++ for CNNs, patch occlusion for ViTs); `explain`:
  per-product explanations and
  the gallery; `faithfulness`: ROAD scores against random maps.
- `model_card`: the Markdown card of a registered version.
"""
