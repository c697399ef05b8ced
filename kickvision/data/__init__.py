"""Data: catalog drops in, model inputs out.

- `catalog`: the generic drop format (catalog.csv + images), its reader, content hash, path safety.
- `importers`: other layouts (Kaggle Fashion Product Images, UT-Zappos50K) -> generic drops.
- `validation`: Great Expectations row checks; bad rows quarantined with a reason.
- `images`: the one image transform (bounded decode, letterbox, normalise) every consumer uses.
- `text`: what the text encoder reads (title + attribute columns) and its tokens.
- `prepare`: group-aware split, label map, the encoded `PreparedData`.
- `demo`: the embedded demo catalog and demo drops.
"""
