"""Request limits and validation shared by every entry point (gRPC and batch),
so both reject exactly the same inputs with the same field paths."""
from __future__ import annotations

from dataclasses import dataclass

from recsys.domain import IdCandidates, RankRequest
from recsys.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Limits:
    max_candidates: int = 1000
    max_top_k: int = 100
    max_text_chars: int = 2000
    max_history_items: int = 200
    max_history_texts: int = 50
    max_id_chars: int = 256
    max_attributes: int = 32      # entries per map: audit_attributes, attributes, features

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"limits.{name} must be a positive integer, got {value!r}")


def _check_text(field: str, text: str, limits: Limits) -> None:
    if len(text) > limits.max_text_chars:
        raise InvalidRequest(field, f"text has {len(text)} characters; the limit is {limits.max_text_chars}")


def _check_id(field: str, value: str, limits: Limits) -> None:
    if not value:
        raise InvalidRequest(field, "must not be empty")
    if len(value) > limits.max_id_chars:
        raise InvalidRequest(field, f"id has {len(value)} characters; the limit is {limits.max_id_chars}")


def _check_map(field: str, mapping: dict, limits: Limits, values_are_text: bool = True) -> None:
    if len(mapping) > limits.max_attributes:
        raise InvalidRequest(field, f"{len(mapping)} entries; the limit is {limits.max_attributes}")
    for key, value in mapping.items():
        if len(key) > limits.max_id_chars:
            raise InvalidRequest(f"{field}[{key[:32]}]",
                                 f"key has {len(key)} characters; the limit is {limits.max_id_chars}")
        if values_are_text and len(value) > limits.max_id_chars:
            raise InvalidRequest(f"{field}[{key}]",
                                 f"value has {len(value)} characters; the limit is {limits.max_id_chars}")


def validate_request(req: RankRequest, limits: Limits) -> None:
    """Raise InvalidRequest naming the first bad field; catalog lookups happen later."""
    if not req.candidates:
        raise InvalidRequest("candidates", "at least one candidate is required")
    if len(req.candidates) > limits.max_candidates:
        raise InvalidRequest(
            "candidates", f"{len(req.candidates)} candidates; the limit is {limits.max_candidates}"
        )
    if not 1 <= req.top_k <= limits.max_top_k:
        raise InvalidRequest("top_k", f"must be between 1 and {limits.max_top_k}, got {req.top_k}")
    if len(req.request_id) > limits.max_id_chars:
        raise InvalidRequest("request_id", f"{len(req.request_id)} characters; the limit is {limits.max_id_chars}")
    user = req.user
    if len(user.user_id) > limits.max_id_chars:
        raise InvalidRequest("user.user_id", f"{len(user.user_id)} characters; the limit is {limits.max_id_chars}")
    _check_map("user.audit_attributes", user.audit_attributes, limits)
    if len(user.history_item_ids) > limits.max_history_items:
        raise InvalidRequest(
            "user.history_item_ids",
            f"{len(user.history_item_ids)} items; the limit is {limits.max_history_items}",
        )
    if len(user.history_texts) > limits.max_history_texts:
        raise InvalidRequest(
            "user.history_texts", f"{len(user.history_texts)} texts; the limit is {limits.max_history_texts}"
        )
    for i, item_id in enumerate(user.history_item_ids):
        _check_id(f"user.history_item_ids[{i}]", item_id, limits)
    for i, text in enumerate(user.history_texts):
        _check_text(f"user.history_texts[{i}]", text, limits)
    # The candidate loop runs for every request: field names (f-strings) are only built once something is
    # wrong, and empty maps are skipped (about 3x cheaper for 100 plain candidates, same messages).
    max_id, max_text = limits.max_id_chars, limits.max_text_chars
    cands = req.candidates
    if type(cands) is IdCandidates:
        # Ids alone: the same checks in three C-level passes; on a failure the loop below names the first
        # bad candidate exactly as for any other request.
        ids = cands.item_ids
        if all(ids) and max(map(len, ids)) <= max_id and len(set(ids)) == len(ids):
            return
    seen: dict[str, int] = {}
    for i, cand in enumerate(cands):
        iid = cand.item_id
        if not iid or len(iid) > max_id:
            _check_id(f"candidates[{i}].item_id", iid, limits)
        if iid in seen:
            raise InvalidRequest(
                f"candidates[{i}].item_id",
                f"duplicate item id {iid!r} (first at candidates[{seen[iid]}])",
            )
        seen[iid] = i
        if cand.text is not None and len(cand.text) > max_text:
            _check_text(f"candidates[{i}].text", cand.text, limits)
        if cand.group is not None and len(cand.group) > max_id:
            raise InvalidRequest(f"candidates[{i}].group",
                                 f"{len(cand.group)} characters; the limit is {limits.max_id_chars}")
        if cand.attributes:
            _check_map(f"candidates[{i}].attributes", cand.attributes, limits)
        if not cand.features:
            continue
        _check_map(f"candidates[{i}].features", cand.features, limits, values_are_text=False)
        for name, value in cand.features.items():
            if value != value or value in (float("inf"), float("-inf")):
                raise InvalidRequest(f"candidates[{i}].features[{name}]", "must be a finite number")
