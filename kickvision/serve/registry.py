"""MLflow side of a trained model: register it (logged by `pyfunc_logging`), promote it only if better.

Aliases, not the deprecated stages: every new version gets `challenger`; `champion` moves only
when the new version scores at least as well as the current champion on the same test rows.
The decision and its reason are version tags; rollback = point `champion` back.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.metrics import accuracy_score, f1_score

from kickvision.errors import RegistryError
from kickvision.model.bundle import ModelBundle, load_bundle
from kickvision.serve.gates import champion_gate, update_gate
from kickvision.serve.pyfunc_logging import photos_as_bytes

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass
class PromotionDecision:
    model_name: str
    version: str
    promoted: bool
    reason: str
    candidate_score: float
    champion_version: str | None = None
    champion_score: float | None = None
    fail_closed: bool = False  # refused because the registry or the champion could not be read
    champion_moved: bool = False  # another version became champion while this one was compared

    def to_dict(self) -> dict:
        return asdict(self)


def score_predictions(truth: list[str], predicted: list[str], metric: str) -> float:
    if metric == "macro_f1":
        return float(f1_score(truth, predicted, average="macro", zero_division=0))
    return float(accuracy_score(truth, predicted))


def champion_version(client: MlflowClient, model_name: str):
    """The version `champion` points at, or None when the registry answers that there is none (no
    such model, no such alias). Any other failure (credentials refused, a 5xx, a timeout, a server
    that is down) is a RegistryError: an unreadable registry is never taken for an empty one."""
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as exc:
        text = str(exc)
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in text and "not found" in text
        ):
            return None
        raise RegistryError(
            f"cannot read which version is '{CHAMPION}' of model '{model_name}' from the registry at "
            f"{_registry_uri(client)} ({exc.error_code}: {first_line(text)})"
        ) from None


def _registry_uri(client: MlflowClient) -> str:
    return getattr(client, "_registry_uri", None) or mlflow.get_registry_uri()


def first_line(text: str, limit: int = 200) -> str:
    """The first line of an error message, cut at `limit` characters (errors here are one line)."""
    return text.strip().splitlines()[0][:limit] if text.strip() else "no message"


def _register(model_uri: str, model_name: str, client: MlflowClient) -> str:
    """A new version of `model_name` with alias `challenger`; a registry error is one RegistryError line."""
    try:
        version = str(mlflow.register_model(model_uri, model_name).version)
        client.set_registered_model_alias(model_name, CHALLENGER, version)
    except MlflowException as exc:
        raise RegistryError(
            f"cannot register {model_uri} as '{model_name}' in the registry at {_registry_uri(client)} "
            f"({exc.error_code}: {first_line(str(exc))})"
        ) from None
    return version


def register_and_promote(
    model_uri: str,
    model_name: str,
    test_rows: pd.DataFrame,
    metric: str = "top1",
    client: MlflowClient | None = None,
    tags: dict[str, str] | None = None,
    replace_unloadable_champion: bool = False,
) -> PromotionDecision:
    """Register `model_uri` as a new version (alias challenger) and decide whether it may replace the champion.

    Both the new version and the current champion are loaded through MLflow and scored on the same
    `test_rows` (columns image, title, the models' text columns, category), so the comparison is like
    for like. Fail closed: when the registry cannot say which version is champion, or the champion
    cannot be loaded and scored, the new version stays challenger with the reason (`fail_closed`),
    unless `replace_unloadable_champion` says to replace an unloadable champion. The decision is
    tagged on the version; the alias itself moves in `move_champion`, after every other record.
    """
    client = client or MlflowClient()
    version = _register(model_uri, model_name, client)
    truth = test_rows["category"].tolist()
    # image (as bytes, the way a server takes them), title (+ the models' text columns)
    inputs = photos_as_bytes(test_rows.drop(columns=["category"]))
    candidate = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}").predict(inputs)
    candidate_score = score_predictions(truth, candidate["category"].tolist(), metric)
    decision = PromotionDecision(model_name, version, False, "", candidate_score)
    try:
        previous = champion_version(client, model_name)
    except RegistryError as exc:
        decision = replace(decision, reason=str(exc), fail_closed=True)
    else:
        decision = _compare_with_champion(decision, previous, inputs, truth, metric, replace_unloadable_champion)
    _tag_decision(client, decision, {**(tags or {}), f"test_{metric}": f"{candidate_score:.6f}"})
    return decision


def _compare_with_champion(decision, previous, inputs, truth, metric: str, replace_unloadable: bool):
    if previous is None:
        promoted, reason = champion_gate(decision.candidate_score, None, metric, None, len(truth))
        return replace(decision, promoted=promoted, reason=reason)
    champion = str(previous.version)
    try:
        predicted = mlflow.pyfunc.load_model(f"models:/{decision.model_name}/{champion}").predict(inputs)
        score = score_predictions(truth, predicted["category"].tolist(), metric)
    except Exception as exc:  # whatever breaks in the champion's own code or files
        why = f"champion v{champion} cannot be loaded and scored ({type(exc).__name__}: {first_line(str(exc))})"
        if not replace_unloadable:
            reason = f"{why}; the new version stays challenger (registry.replace_unloadable_champion: true replaces it)"
            return replace(decision, champion_version=champion, reason=reason, fail_closed=True)
        log.warning("%s; replacing it, as registry.replace_unloadable_champion says", why)
        return replace(decision, promoted=True, champion_version=champion, reason=f"{why}; replaced as configured")
    promoted, reason = champion_gate(decision.candidate_score, score, metric, champion, len(truth))
    return replace(decision, promoted=promoted, reason=reason, champion_version=champion, champion_score=score)


def _tag_decision(client: MlflowClient, decision: PromotionDecision, tags: dict[str, str], moved: bool = False) -> None:
    """The decision on the version. A version the gate passed is `pending` until the alias has moved
    (`processed_by` does not count a pending or failed-closed version as having applied its drop). A
    registry that refuses the write is a RegistryError; for a decision that already failed closed the
    write is best effort (the registry is the problem the decision reports)."""
    fate = ("champion" if moved else "pending") if decision.promoted else "challenger"
    record = {  # the decision last: a write that stops partway leaves the version's previous fate
        **tags,
        "promotion_reason": decision.reason,
        "promotion_fail_closed": str(decision.fail_closed).lower(),
        "promotion_champion_moved": str(decision.champion_moved).lower(),
        "promotion_decision": fate,
    }
    try:
        for key, value in record.items():
            client.set_model_version_tag(decision.model_name, decision.version, key, str(value))
    except MlflowException as exc:
        why = (
            f"cannot record the decision on {decision.model_name} v{decision.version} in the registry at "
            f"{_registry_uri(client)} ({exc.error_code}: {first_line(str(exc))})"
        )
        refuse_unless_failed_closed(decision, why, f"it is {fate}" + ("" if moved else ", nothing was promoted"))
    log.info("registered %s v%s: %s (%s)", decision.model_name, decision.version, fate, decision.reason)


def refuse_unless_failed_closed(decision: PromotionDecision, why: str, consequence: str) -> None:
    """A record of `decision` that MLflow would not write: a RegistryError (`why; consequence`), or only a
    warning when the decision already failed closed (the registry is what its reason reports). Called
    for every record of a registration: the version's tags here, the run's records in the register step."""
    if not decision.fail_closed:
        raise RegistryError(f"{why}; {consequence}") from None
    log.warning("%s", why)


def move_champion(decision: PromotionDecision, client: MlflowClient | None = None) -> PromotionDecision:
    """The last write of a registration: point `champion` at the version if its gate passed and the
    champion is still the version the gate compared against (compare-and-set; MLflow has no atomic
    one, so the check is a read right before the write). Otherwise the version stays challenger and
    its tags say why. A version its gate refused is checked too: if the champion moved meanwhile, its
    comparison was against a stale champion, and it says so (`champion_moved`), so that the caller can
    apply its drop to the new champion. Returns the final decision."""
    if not decision.promoted:
        return _refused_against_a_moved_champion(decision, client or MlflowClient())
    client = client or MlflowClient()
    try:
        current = champion_version(client, decision.model_name)
    except RegistryError as exc:
        final = replace(decision, promoted=False, reason=str(exc), fail_closed=True)
    else:
        now = str(current.version) if current is not None else None
        if now == decision.champion_version:
            try:
                client.set_registered_model_alias(decision.model_name, CHAMPION, decision.version)
            except MlflowException as exc:
                reason = f"moving '{CHAMPION}' to v{decision.version} failed ({exc.error_code}: {first_line(str(exc))})"
                final = replace(decision, promoted=False, reason=reason, fail_closed=True)
            else:
                _tag_decision(client, decision, {}, moved=True)
                return decision
        else:
            final = replace(
                decision,
                promoted=False,
                champion_moved=True,
                reason=f"champion moved from {_named(decision.champion_version)} to {_named(now)} while "
                f"v{decision.version} was compared against it; v{decision.version} stays challenger",
            )
    _tag_decision(client, final, {})
    return final


def _refused_against_a_moved_champion(decision: PromotionDecision, client: MlflowClient) -> PromotionDecision:
    """A refused decision as it stands, or marked `champion_moved` when the champion is no longer the
    version it was compared against, or failed closed when the registry cannot say which is champion now
    (nothing is promoted either way; a fail-closed answer makes the watcher retry the drop later)."""
    if decision.fail_closed or decision.champion_version is None:
        return decision
    try:
        current = champion_version(client, decision.model_name)
    except RegistryError as exc:  # the champion may have moved: the refusal cannot be taken as the answer
        final = replace(decision, fail_closed=True, reason=f"{decision.reason}; but {exc}")
        _tag_decision(client, final, {})
        return final
    now = str(current.version) if current is not None else None
    if now == decision.champion_version:
        return decision
    final = replace(
        decision,
        champion_moved=True,
        reason=f"{decision.reason}; but the champion moved from {_named(decision.champion_version)} to "
        f"{_named(now)} while v{decision.version} was compared against it",
    )
    _tag_decision(client, final, {})
    return final


def _named(version: str | None) -> str:
    return f"v{version}" if version else "no champion"


def register_update_version(
    model_uri: str,
    model_name: str,
    parent_version: str | None,
    metrics: dict[str, float],
    tolerance: float,
    tags: dict[str, str] | None = None,
    client: MlflowClient | None = None,
) -> PromotionDecision:
    """Register an updated model (alias challenger) and decide by update_gate; `move_champion` then moves
    the alias only if the champion is still the version the update started from."""
    client = client or MlflowClient()
    version = _register(model_uri, model_name, client)
    promoted, reason = update_gate(metrics, tolerance)
    decision = PromotionDecision(
        model_name,
        version,
        promoted,
        reason,
        metrics["update_combined_top1_after"],
        str(parent_version) if parent_version else None,  # the champion the update started from
        metrics["update_combined_top1_before"],
    )
    _tag_decision(client, decision, {**(tags or {}), "parent_version": parent_version or ""})
    return decision


def _answered(tags: dict[str, str]) -> bool:
    """The version's gate has answered: not pending (the alias never moved) nor failed closed."""
    return tags.get("promotion_decision") != "pending" and tags.get("promotion_fail_closed") != "true"


def processed_by(model_name: str, content_hash: str, client: MlflowClient | None = None):
    """The version that already learned this exact drop on top of the current champion, if any.

    That is the champion itself (it was trained or updated on the drop, or is a joint retrain on a
    catalog merged with it: tag `joint_retrain_of`) or a version updated from
    the champion with it (e.g. a challenger the gate refused): running the drop again would repeat it.
    """
    client = client or MlflowClient()
    champ = champion_version(client, model_name)
    if champ is None:
        return None
    for version in client.search_model_versions(f"name='{model_name}'"):
        tags = version.tags or {}
        if str(version.version) == str(champ.version) and content_hash in tags.get("joint_retrain_of", "").split(","):
            return version  # a joint retrain on a catalog merged with the drop
        if tags.get("catalog_hash") != content_hash:
            continue
        if str(version.version) == str(champ.version):
            return version
        if tags.get("parent_version") == str(champ.version) and _answered(tags):  # its gate's answer stands
            return version
    return None


def registered_from(model_name: str, content_hash: str, client: MlflowClient | None = None):
    """The latest version whose gate has answered that learnt exactly this catalog (by content hash),
    e.g. a joint retrain on a merged catalog that already ran; None when there is none. A version
    compared against a champion that was replaced before its alias could move does not count."""
    client = client or MlflowClient()
    for version in sorted(client.search_model_versions(f"name='{model_name}'"), key=lambda v: -int(v.version)):
        tags = version.tags or {}
        stale = tags.get("promotion_champion_moved") == "true"  # compared against a champion since replaced
        if (
            tags.get("catalog_hash") == content_hash
            and tags.get("promotion_decision")
            and _answered(tags)
            and not stale
        ):
            return version
    return None


def champion_uri(model_name: str = "kickvision", client: MlflowClient | None = None) -> str:
    """`models:/<name>@champion`, or a RegistryError saying how to get one."""
    client = client or MlflowClient()
    if champion_version(client, model_name) is None:
        raise RegistryError(
            f"no '{CHAMPION}' version of model '{model_name}' in the registry at "
            f"{mlflow.get_tracking_uri()}; train one first (kickvision demo / kickvision train)"
        )
    return f"models:/{model_name}@{CHAMPION}"


def load_registered_bundle(model_uri: str) -> ModelBundle:
    """The ModelBundle inside a registered pyfunc (e.g. models:/kickvision@champion)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return load_bundle(Path(local) / "artifacts" / "bundle")
