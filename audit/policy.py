"""The audit policy: one validated, typed object loaded from TOML at start-up."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError

ACTIONS = ("FLAG", "ENFORCE")
FAILURE_MODES = ("closed",)


@dataclass(frozen=True)
class ExposurePolicy:
    enabled: bool = True
    action: str = "FLAG"
    min_selection_rate_ratio: float = 0.8
    min_exposure_ratio: float = 0.8
    min_group_size: int = 5


@dataclass(frozen=True)
class BlockTerm:
    term: str
    category: str


@dataclass(frozen=True)
class HarmPolicy:
    enabled: bool = True
    action: str = "ENFORCE"
    threshold: float | None = None
    blocklist: tuple[BlockTerm, ...] = ()


@dataclass(frozen=True)
class AudienceRule:
    user_attribute: str
    user_values: frozenset[str]
    item_attribute: str
    item_values: frozenset[str]


@dataclass(frozen=True)
class AudiencePolicy:
    enabled: bool = True
    action: str = "ENFORCE"
    rules: tuple[AudienceRule, ...] = ()


@dataclass(frozen=True)
class LogPolicy:
    # User audit attributes recorded with each decision; any other key is dropped.
    audit_attributes: tuple[str, ...] = ("gender", "age_band")


@dataclass(frozen=True)
class ReportPolicy:
    band: tuple[float, float] = (0.8, 1.25)
    min_group_size: int = 30
    n_boot: int = 100


@dataclass(frozen=True)
class Policy:
    version: str
    failure_mode: str = "closed"
    exposure: ExposurePolicy = field(default_factory=ExposurePolicy)
    harm: HarmPolicy = field(default_factory=HarmPolicy)
    audience: AudiencePolicy = field(default_factory=AudiencePolicy)
    log: LogPolicy = field(default_factory=LogPolicy)
    report: ReportPolicy = field(default_factory=ReportPolicy)


def _take(table: dict[str, Any], prefix: str, allowed: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"policy key {prefix}{unknown[0]} is not known; allowed: {', '.join(sorted(allowed))}")
    out = {}
    for key, typ in allowed.items():
        if key not in table:
            continue
        value = table[key]
        ok = isinstance(value, typ) and not (isinstance(value, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,)))
        if not ok:
            raise ConfigError(f"policy key {prefix}{key} has the wrong type: got {value!r}")
        out[key] = value
    return out


def _action(value: str, key: str) -> str:
    if value not in ACTIONS:
        raise ConfigError(f"policy key {key} must be one of {', '.join(ACTIONS)}; got {value!r}")
    return value


def _ratio(value: float, key: str) -> float:
    if not 0 <= value <= 1:
        raise ConfigError(f"policy key {key} must be between 0 and 1; got {value!r}")
    return float(value)


def parse_policy(data: dict[str, Any]) -> Policy:
    top = _take(data, "", {"version": str, "failure_mode": str, "exposure": dict, "harm": dict, "audience": dict,
                           "log": dict, "report": dict})
    if "version" not in top or not top["version"]:
        raise ConfigError("policy key version is required (a non-empty string)")
    mode = top.get("failure_mode", "closed")
    if mode not in FAILURE_MODES:
        raise ConfigError(f"policy key failure_mode must be one of {', '.join(FAILURE_MODES)}; got {mode!r}")
    e = _take(top.get("exposure", {}), "exposure.", {
        "enabled": bool, "action": str, "min_selection_rate_ratio": (int, float),
        "min_exposure_ratio": (int, float), "min_group_size": int})
    exposure = ExposurePolicy(
        enabled=e.get("enabled", True), action=_action(e.get("action", "FLAG"), "exposure.action"),
        min_selection_rate_ratio=_ratio(e.get("min_selection_rate_ratio", 0.8), "exposure.min_selection_rate_ratio"),
        min_exposure_ratio=_ratio(e.get("min_exposure_ratio", 0.8), "exposure.min_exposure_ratio"),
        min_group_size=e.get("min_group_size", 5))
    if exposure.min_group_size < 1:
        raise ConfigError(f"policy key exposure.min_group_size must be >= 1; got {exposure.min_group_size}")
    h = _take(top.get("harm", {}), "harm.", {"enabled": bool, "action": str, "threshold": (int, float),
                                            "blocklist": list})
    terms = []
    for i, entry in enumerate(h.get("blocklist", [])):
        if not isinstance(entry, dict):
            raise ConfigError(f"policy key harm.blocklist[{i}] must be a table {{term, category}}")
        t = _take(entry, f"harm.blocklist[{i}].", {"term": str, "category": str})
        if not t.get("term") or not t.get("category"):
            raise ConfigError(f"policy key harm.blocklist[{i}] needs a non-empty term and category")
        terms.append(BlockTerm(t["term"].lower(), t["category"]))
    threshold = h.get("threshold")
    harm = HarmPolicy(enabled=h.get("enabled", True), action=_action(h.get("action", "ENFORCE"), "harm.action"),
                      threshold=None if threshold is None else _ratio(threshold, "harm.threshold"),
                      blocklist=tuple(terms))
    a = _take(top.get("audience", {}), "audience.", {"enabled": bool, "action": str, "rules": list})
    rules = []
    for i, entry in enumerate(a.get("rules", [])):
        prefix = f"audience.rules[{i}]."
        if not isinstance(entry, dict):
            raise ConfigError(f"policy key {prefix[:-1]} must be a table")
        r = _take(entry, prefix, {"user_attribute": str, "user_values": list, "item_attribute": str,
                                  "item_values": list})
        for key in ("user_attribute", "user_values", "item_attribute", "item_values"):
            if not r.get(key):
                raise ConfigError(f"policy key {prefix}{key} is required and must not be empty")
        rules.append(AudienceRule(r["user_attribute"], frozenset(map(str, r["user_values"])),
                                  r["item_attribute"], frozenset(map(str, r["item_values"]))))
    audience = AudiencePolicy(enabled=a.get("enabled", True),
                              action=_action(a.get("action", "ENFORCE"), "audience.action"), rules=tuple(rules))
    lg = _take(top.get("log", {}), "log.", {"audit_attributes": list})
    attrs = lg.get("audit_attributes", list(LogPolicy.audit_attributes))
    if not all(isinstance(a, str) and a for a in attrs):
        raise ConfigError("policy key log.audit_attributes must be a list of non-empty strings")
    r = _take(top.get("report", {}), "report.", {"band": list, "min_group_size": int, "n_boot": int})
    band = r.get("band", list(ReportPolicy.band))
    if (len(band) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in band)
            or not 0 < band[0] <= 1 <= band[1]):
        raise ConfigError(f"policy key report.band must be [low, high] with 0 < low <= 1 <= high; got {band!r}")
    report = ReportPolicy((float(band[0]), float(band[1])), r.get("min_group_size", ReportPolicy.min_group_size),
                          r.get("n_boot", ReportPolicy.n_boot))
    if report.min_group_size < 1:
        raise ConfigError(f"policy key report.min_group_size must be >= 1; got {report.min_group_size}")
    if report.n_boot < 0:
        raise ConfigError(f"policy key report.n_boot must be >= 0; got {report.n_boot}")
    return Policy(top["version"], mode, exposure, harm, audience, LogPolicy(tuple(attrs)), report)


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate a policy file; None loads the shipped default."""
    if path is None:
        text = resources.files("audit").joinpath("policies/default.toml").read_text()
        source = "default policy"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"policy file not found: {p}")
        text, source = p.read_text(), str(p)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file {source} is not valid TOML: {exc}") from None
    return parse_policy(data)
