"""A class-incremental catalog drop as a new user meets it: `kickvision train`, then `kickvision update`.

Cuts a real catalog into two ordinary catalog folders: the base (every category but `--new`, less a
random `--moved` share of its products) and the drop (the `--new` categories plus the moved
products), photos hard-linked (copied across file systems). Then, in a fresh kickvision state folder
(its own ZenML store and MLflow registry), runs the two commands a user would run, timed, and
reports what each printed: test top-1, forgetting, new-category top-1 and whether the update became
champion.

With `--update-variant "continual.epochs=6;continual.patience=2"` (repeatable) the update also runs with
those settings changed, side by side: each variant starts from the same trained state (the state folder is
copied after the training and put back before each variant; every path in it stays the same), so each
update meets the champion, registry and ZenML cache the first one met. The copy (`state.trained`) stays, so
`--skip-train` later updates from the same trained state again.

    .venv/bin/python benchmarks/update_as_a_user.py --catalog ../shared/data/fashion-footwear --config fashion
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from common import write_result

from kickvision.config import deep_merge, dotted_overrides, load_config, resolve_config_path
from kickvision.data.catalog import link_or_copy, read_catalog, resolve_inside

REPO = Path(__file__).resolve().parents[1]


def write_scenario(catalog: Path, out: Path, new: list[str], moved: float, seed: int) -> tuple[Path, Path]:
    """(base folder, drop folder) cut from `catalog` (see the module docstring)."""
    rows = read_catalog(catalog, content_hash="-").rows
    is_new = rows["category"].isin(new).to_numpy()
    rng = np.random.default_rng(seed)
    is_moved = ~is_new & (rng.random(len(rows)) < moved)
    folders = []
    for name, mask in (("base", ~is_new & ~is_moved), ("drop", is_new | is_moved)):
        folder = out / name
        if folder.exists():
            shutil.rmtree(folder)
        part = rows[mask].reset_index(drop=True)
        folder.mkdir(parents=True)
        for relative in part["image"].dropna():
            source = resolve_inside(catalog, relative)
            if source is None or not source.is_file():
                continue  # validation will quarantine the row, as it would in the whole catalog
            link_or_copy(source, folder / source.relative_to(catalog.resolve()))  # never outside `folder`
        part.to_csv(folder / "catalog.csv", index=False)
        folders.append(folder)
    return folders[0], folders[1]


def run(command: list[str], env: dict[str, str], log: Path) -> tuple[int, float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log.write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    return done.returncode, seconds, done.stdout


def summary_value(output: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}\s+(.*)$", output, re.MULTILINE)
    return match.group(1).strip() if match else ""


def variant_config(config: str, variant: str, out: Path) -> Path:
    """A copy of `config` with the `;`-separated KEY=VALUE settings of `variant` changed, validated."""
    raw = yaml.safe_load(resolve_config_path(config).read_text()) or {}
    changed = deep_merge(raw, dotted_overrides([a.strip() for a in variant.split(";") if a.strip()]))
    out.write_text(yaml.safe_dump(changed, sort_keys=False))
    load_config(out)  # a misspelt setting fails here, by name, before anything runs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--config", default="fashion")
    parser.add_argument("--new", default="Heels,Flats", help="categories the drop brings")
    parser.add_argument("--moved", type=float, default=0.3, help="share of the other products moved to the drop")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", default="/tmp/kickvision-update-as-a-user", help="folders, state and logs")
    parser.add_argument(
        "--skip-train",
        action="store_true",
        help="reuse the trained state of an earlier run in --work (its state.trained snapshot, else its state)",
    )
    parser.add_argument(
        "--update-variant",
        action="append",
        default=[],
        metavar="KEY=VALUE;...",
        help="also update with these settings changed, from the same trained state (repeatable)",
    )
    parser.add_argument("--out", help="JSON path (default benchmarks/results/update_as_a_user_<config>.json)")
    args = parser.parse_args()

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base, drop = write_scenario(Path(args.catalog).resolve(), work, args.new.split(","), args.moved, args.seed)
    state = work / "state"
    if not args.skip_train and state.exists():
        shutil.rmtree(state)
    env = os.environ | {
        "ZENML_CONFIG_PATH": str(state / "zenml"),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    cli = str(Path(sys.executable).with_name("kickvision"))
    variants = {"update": args.config} | {
        f"update[{v}]": str(variant_config(args.config, v, work / f"variant{i}.yaml"))
        for i, v in enumerate(args.update_variant, 1)
    }
    results = {}
    steps = [] if args.skip_train else [("train", [cli, "train", "--catalog", str(base), "--config", args.config])]
    steps += [(name, [cli, "update", "--drop", str(drop), "--config", config]) for name, config in variants.items()]
    # Every update starts from the state as the training left it: snapshotted before the first update
    # (a fresh training replaces an earlier snapshot); with --skip-train an existing snapshot is that state,
    # else the state folder as it is (the trained state only if no update of an older version of this script ran in it).
    trained = work / "state.trained"
    if args.skip_train and not (trained.exists() or state.exists()):
        parser.error(f"--skip-train: no trained state in {work} (neither state.trained nor state)")
    if not args.skip_train:
        shutil.rmtree(trained, ignore_errors=True)
    for number, (name, command) in enumerate(steps):
        if name.startswith("update"):
            if not trained.exists():
                shutil.copytree(state, trained, symlinks=True)
            else:  # whatever state is there (an earlier update's) is kept beside it, then the snapshot restored
                if state.exists():
                    kept = work / f"state.before{number}"
                    shutil.rmtree(kept, ignore_errors=True)
                    state.rename(kept)
                shutil.copytree(trained, state, symlinks=True)
        code, seconds, output = run(command, env, work / f"{name}.log".replace("/", "_"))
        results[name] = {
            "config": command[-1],
            "exit": code,
            "seconds": seconds,
            "test_top1": summary_value(output, "test top-1"),
            "old_top1": summary_value(output, "old top-1"),
            "new_top1": summary_value(output, "new top-1"),
            "combined_top1": summary_value(output, "combined top-1"),
            "registered": summary_value(output, "registered"),
            "next_step": summary_value(output, "next step"),
        }
        print(f"{name}: exit {code}, {seconds / 60:.1f} min: {results[name]}", flush=True)
        if code != 0:
            print(f"see {work / (name + '.log').replace('/', '_')}")
            break
    print("\n| command | wall | test top-1 | old top-1 | new top-1 | registered |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['seconds'] / 60:.1f} min | {r['test_top1']} | {r['old_top1'] or '-'} | "
            f"{r['new_top1'] or '-'} | {r['registered']} |"
        )
    write_result({"args": vars(args), "results": results}, args.out, f"update_as_a_user_{args.config}.json")


if __name__ == "__main__":
    main()
