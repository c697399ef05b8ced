"""Write a catalog's good rows, as validation (Great Expectations) leaves them, to a folder of their own:
catalog.csv (with the image probe's columns: image_sha1, width, height) and the images those rows
name. For machines without GX, such as a lent GPU box: benchmarks read it with `--validated`.

    .venv/bin/python benchmarks/gpu/validated_catalog.py ../shared/data/fashion-footwear .gpu/fashion-footwear
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from kickvision.config import load_config
from kickvision.data.catalog import read_catalog, resolve_inside
from kickvision.data.validation import quarantine_bad_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalog")
    parser.add_argument("out")
    parser.add_argument("--config", default="fashion", help="whose validate section decides (default fashion)")
    args = parser.parse_args()
    result = quarantine_bad_rows(read_catalog(Path(args.catalog)), load_config(args.config).validate_)
    root, out = result.catalog.root.resolve(), Path(args.out).resolve()
    if out == root or root in out.parents:
        raise SystemExit(f"error: {out} is inside the catalog {root}: write the validated copy elsewhere")
    rows = result.catalog.rows.copy()
    # each photo under its path inside the catalog, normalised (validation let only paths inside it through)
    sources = [resolve_inside(root, relative) for relative in rows["image"]]
    rows["image"] = [source.relative_to(root).as_posix() for source in sources]
    for source, relative in zip(sources, rows["image"], strict=True):
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    rows.to_csv(out / "catalog.csv", index=False)
    print(f"{len(rows)} good rows of {result.total_rows} ({len(result.quarantine)} quarantined) -> {out}")


if __name__ == "__main__":
    main()
