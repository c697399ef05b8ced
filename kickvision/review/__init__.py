"""The review desk: what merchandisers open every day (`kickvision review`).

- `service`: the web-free core. `ReviewDesk` answers "what does the champion think of this
  product and why" (calibrated probabilities, a needs-review flag, a map per image branch, title word
  weights, similar products), ranks a catalog's doubtful labels (`audit_catalog`, shared with
  `kickvision audit`), writes reviewers' decisions to the catalog's corrections file, and reports on
  drop folders (disagreements with their labels, drift from the training catalog, the advice).
- `drift`: how far a drop's products lie from what the model learnt.
- `app`: the FastAPI application: a JSON API (`POST /api/predict`, ...) and one offline page.
"""
