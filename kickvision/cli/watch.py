"""`kickvision watch`: apply every new catalog drop in a folder to the champion, once each.

Per drop: the update pipeline on the champion; when its gate refuses and `continual.refused_update`
is `joint_retrain`, a training on the champion's catalogs merged with the drop. A champion that
moved while the drop was compared against the previous one has not learnt it: the drop is applied
again to the new one (once; then the drop stays pending). A registry that cannot be read stops the
watcher with the drop pending; a drop with a data problem is recorded as failed (tried again once
its files change).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kickvision.cli.commands import merge_for_joint_retrain
from kickvision.cli.common import catalog_dir
from kickvision.cli.console import setup_console
from kickvision.errors import user_error_in_chain


def cmd_watch(args: argparse.Namespace) -> int:
    from kickvision.config import load_config
    from kickvision.data.catalog import hash_drop
    from kickvision.errors import CatalogError, RegistryError
    from kickvision.watch import DropFailed, watch
    from orchestration.runner import run_update

    cfg = load_config(args.config)
    setup_console()

    def update(folder: Path) -> str:
        for _attempt in (1, 2):
            try:
                drop = catalog_dir(args, folder)
                result = run_update(drop, cfg)
            except Exception as exc:
                cause = user_error_in_chain(exc)
                if isinstance(cause, CatalogError):
                    raise DropFailed(str(cause)) from None
                raise cause or exc from None
            if isinstance(result, str):  # this drop already reached the registry (e.g. before a crash)
                reason, moved = unfinished_joint_retrain(drop)
                if not moved:
                    return result + (f"; {reason}" if reason else "")
            else:
                reg = result.registration
                if reg.get("fail_closed"):  # the registry's problem, not the drop's: stop, retry this drop next time
                    raise RegistryError(f"nothing was promoted: {reg.get('reason')}")
                reason = reg.get("reason")
                if not reg.get("champion_moved"):
                    fate = "champion" if reg.get("promoted") else "challenger"
                    detail = f"{reg.get('model_name')} v{reg.get('version')} {fate}: {reg.get('reason')}"
                    joint = reg.get("joint_retrain") or {}
                    if reg.get("promoted") or cfg.continual.refused_update != "joint_retrain":
                        return detail
                    if not joint.get("catalogs"):
                        return detail + "; no joint retrain: the champion does not name the catalogs it learnt"
                    reason, moved = joint_retrain(joint["catalogs"], drop)
                    if not moved:
                        return detail + "; " + reason
            # Another version became champion while this drop was applied to the previous one (by its
            # update or by the joint retrain after it): the new champion has not learnt the drop yet, so
            # apply it again (once; then stop and retry later).
            print(f"{folder.name}: {reason}; applying the drop to the new champion", flush=True)
        raise RegistryError(f"the champion keeps moving while {folder.name} is applied; it stays pending")

    def unfinished_joint_retrain(drop: str) -> tuple[str, bool]:
        """The fallback a crash interrupted: the drop's update was refused and registered, its joint
        retrain never finished. Run it now (joint_retrain skips it when it did finish)."""
        from kickvision.serve.registry import load_registered_bundle, processed_by
        from orchestration.stack import use_tracking

        if cfg.continual.refused_update != "joint_retrain":
            return "", False
        use_tracking()  # a pipeline run leaves MLflow's client pointing nowhere
        version = processed_by(cfg.registry.model_name, hash_drop(drop))
        if version is None or version.tags.get("promotion_decision") != "challenger":
            return "", False  # the champion learnt it, or no update of the champion did
        catalogs = load_registered_bundle(f"models:/{version.name}/{version.version}").spec.lineage.catalog_paths
        if not catalogs:
            return "no joint retrain: the champion does not name the catalogs it learnt", False
        return joint_retrain(catalogs, drop)

    def joint_retrain(catalogs: list[str], drop: str) -> tuple[str, bool]:
        """The fallback after a refused update (continual.refused_update: joint_retrain), once per merged
        catalog: (what happened, whether the champion moved while the retrain was compared against it)."""
        from kickvision.serve.registry import registered_from
        from orchestration.runner import run_training
        from orchestration.stack import use_tracking

        try:
            merged = merge_for_joint_retrain(catalogs)
            use_tracking()  # a pipeline run leaves MLflow's client pointing nowhere
            before = registered_from(cfg.registry.model_name, hash_drop(merged.folder))
            if before is not None:  # it finished before a crash: its gate has answered
                tags = before.tags
                return (
                    f"joint retrain {before.name} v{before.version} {tags['promotion_decision']} (before a restart): "
                    f"{tags.get('promotion_reason')}"
                ), False
            print(f"update refused; joint retrain: {merged.summary()}", flush=True)
            reg = run_training(str(merged.folder), cfg, joint_retrain_of=[hash_drop(drop)]).registration
        except Exception as exc:
            cause = user_error_in_chain(exc)
            if isinstance(cause, CatalogError):  # e.g. an old catalog folder moved away: say so, keep going
                return f"no joint retrain: {cause}", False
            raise cause or exc from None
        if reg.get("fail_closed"):
            raise RegistryError(f"joint retrain: nothing was promoted: {reg.get('reason')}")
        fate = "champion" if reg.get("promoted") else "challenger"
        said = f"joint retrain {reg.get('model_name')} v{reg.get('version')} {fate}: {reg.get('reason')}"
        return said, bool(reg.get("champion_moved"))

    def report(name: str, outcome) -> None:
        print(f"{name}: {outcome.status}: {outcome.detail}", flush=True)

    outcomes = watch(
        args.drops, update, once=args.once, interval_s=args.interval, report=report, max_drops=args.max_drops
    )
    left = "" if args.max_drops and len(outcomes) == args.max_drops else f"; nothing left in {args.drops}"
    print(f"processed {len(outcomes)} drop(s){left}")
    return 0
