from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_MODE_UNSPECIFIED: _ClassVar[AuditMode]
    AUDIT_MODE_ENFORCE: _ClassVar[AuditMode]
    AUDIT_MODE_FLAG_ONLY: _ClassVar[AuditMode]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_PASS: _ClassVar[Verdict]
    VERDICT_FLAGGED: _ClassVar[Verdict]
    VERDICT_ENFORCED: _ClassVar[Verdict]
AUDIT_MODE_UNSPECIFIED: AuditMode
AUDIT_MODE_ENFORCE: AuditMode
AUDIT_MODE_FLAG_ONLY: AuditMode
VERDICT_UNSPECIFIED: Verdict
VERDICT_PASS: Verdict
VERDICT_FLAGGED: Verdict
VERDICT_ENFORCED: Verdict

class User(_message.Message):
    __slots__ = ("user_id", "history_item_ids", "history_texts", "audit_attributes")
    class AuditAttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_TEXTS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    history_item_ids: _containers.RepeatedScalarFieldContainer[str]
    history_texts: _containers.RepeatedScalarFieldContainer[str]
    audit_attributes: _containers.ScalarMap[str, str]
    def __init__(self, user_id: _Optional[str] = ..., history_item_ids: _Optional[_Iterable[str]] = ..., history_texts: _Optional[_Iterable[str]] = ..., audit_attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("item_id", "text", "features", "group", "attributes")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    text: str
    features: _containers.ScalarMap[str, float]
    group: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, item_id: _Optional[str] = ..., text: _Optional[str] = ..., features: _Optional[_Mapping[str, float]] = ..., group: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("request_id", "user", "candidates", "top_k", "audit_mode", "candidate_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    AUDIT_MODE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user: User
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    top_k: int
    audit_mode: AuditMode
    candidate_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., user: _Optional[_Union[User, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., top_k: _Optional[int] = ..., audit_mode: _Optional[_Union[AuditMode, str]] = ..., candidate_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RankedItem(_message.Message):
    __slots__ = ("item_id", "score", "interest_score", "ranker_score", "rank")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    INTEREST_SCORE_FIELD_NUMBER: _ClassVar[int]
    RANKER_SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    interest_score: float
    ranker_score: float
    rank: int
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., interest_score: _Optional[float] = ..., ranker_score: _Optional[float] = ..., rank: _Optional[int] = ...) -> None: ...

class RemovedItem(_message.Message):
    __slots__ = ("item_id", "reason", "message")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    reason: str
    message: str
    def __init__(self, item_id: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Finding(_message.Message):
    __slots__ = ("code", "metric", "value", "threshold", "group", "message", "p_value", "alpha")
    CODE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    code: str
    metric: str
    value: float
    threshold: float
    group: str
    message: str
    p_value: float
    alpha: float
    def __init__(self, code: _Optional[str] = ..., metric: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., group: _Optional[str] = ..., message: _Optional[str] = ..., p_value: _Optional[float] = ..., alpha: _Optional[float] = ...) -> None: ...

class Audit(_message.Message):
    __slots__ = ("audit_id", "verdict", "findings", "policy_version")
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    audit_id: str
    verdict: Verdict
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    policy_version: str
    def __init__(self, audit_id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., policy_version: _Optional[str] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("items", "removed", "audit", "model_version", "request_id")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RankedItem]
    removed: _containers.RepeatedCompositeFieldContainer[RemovedItem]
    audit: Audit
    model_version: str
    request_id: str
    def __init__(self, items: _Optional[_Iterable[_Union[RankedItem, _Mapping]]] = ..., removed: _Optional[_Iterable[_Union[RemovedItem, _Mapping]]] = ..., audit: _Optional[_Union[Audit, _Mapping]] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...
