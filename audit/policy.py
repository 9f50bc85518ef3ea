"""The audit policy: one validated, typed object loaded from TOML at start-up."""
from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from audit.harm_categories import CATEGORIES, CATEGORY_ACTIONS, FLAG_BY_DEFAULT
from recsys.errors import ConfigError

ACTIONS = ("FLAG", "ENFORCE")
FAILURE_MODES = ("closed",)
# gRPC status the caller gets when the audit cannot complete (the answer is withheld either way).
FAILURE_STATUSES = ("INTERNAL", "UNAVAILABLE")


@dataclass(frozen=True)
class ExposurePolicy:
    enabled: bool = True
    action: str = "FLAG"
    min_selection_rate_ratio: float = 0.8
    min_exposure_ratio: float = 0.8
    min_group_size: int = 5
    # ENFORCE re-ranking may cost at most this much NDCG@k, measured against the
    # original list with the model's own scores as gains (0.05 = 5 %).
    max_ndcg_loss: float = 0.05
    # Family-wise error level of the per-request group-blind tests (audit/exposure_significance.py): a
    # disparity is reported only when its Holm-adjusted p-value is at most alpha.
    alpha: float = 0.05


@dataclass(frozen=True)
class ExposureWindowPolicy:
    """Amortised exposure (audit/exposure_window.py): each item group's position-weighted exposure summed
    over the last `window` responses vs what a group-blind ranking of the same candidates would give."""

    enabled: bool = True
    window: int = 2000                   # most recent responses kept
    min_requests: int = 100              # responses a group must appear in before it is judged
    min_ratio: float = 0.8               # amortised exposure ratio whose whole interval lies below -> finding
    confidence: float = 0.95             # of the (two-sided) interval on the ratio
    refresh_every: int = 100             # responses between recomputations (off the request path)
    max_busy_share: float = 0.05         # share of the process's time the refresh thread may take


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
    # (category, action) pairs from [harm.categories]; a category not listed follows `action`, except the
    # FLAG_BY_DEFAULT ones (sexual, profanity-only), which are FLAG-only unless listed.
    categories: tuple[tuple[str, str], ...] = ()

    def action_for(self, category: str) -> str:
        """IGNORE, FLAG or ENFORCE for a classifier category. `action` caps every category (FLAG: nothing is
        removed); older artifacts' categories ("offensive") follow `action`."""
        act = dict(self.categories).get(category, "FLAG" if category in FLAG_BY_DEFAULT else self.action)
        return min(act, self.action, key=CATEGORY_ACTIONS.index)


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
class MonitorPolicy:
    """Rolling user-group monitor (audit/monitor.py): what users receive, by audit attribute."""

    enabled: bool = True
    window: int = 2000                   # most recent requests kept
    attributes: tuple[str, ...] = ("gender", "age_band")
    intersections: tuple[tuple[str, ...], ...] = (("gender", "age_band"),)
    min_samples: int = 50                # requests per group before it is judged
    min_ratio: float = 0.8               # group / best group below this (and significant) -> finding
    confidence: float = 0.95             # of the Wilson / bootstrap intervals that decide "significant"
    refresh_every: int = 100             # requests between recomputations (off the request path)
    n_boot: int = 200
    # Most of the process's time the refresh thread may take: after a refresh of d seconds it waits
    # d * (1 - share) / share before the next. A refresh holds the GIL (MetricFrame is pandas), so an
    # unbounded one running back to back under load slows every request thread.
    max_busy_share: float = 0.05


@dataclass(frozen=True)
class LogPolicy:
    # User audit attributes recorded with each decision; any other key is dropped.
    audit_attributes: tuple[str, ...] = ("gender", "age_band")
    # SQLite durability (audit/log.py): NORMAL survives a killed process, FULL also power loss.
    synchronous: str = "NORMAL"
    # "journal": the request path appends to a per-process journal file and a thread moves records into
    # SQLite (same durability, the transaction and hashing off the request path); "direct": commit to
    # SQLite on the request path.
    write: str = "journal"
    # Journal mode: records not yet in the store that the local journal may hold (MiB, about 2.5 KB per record
    # with 100 candidates) while the store is unreachable; past it, calls fail closed (audit/log.py).
    journal_max_mb: int = 64
    # Where the audit trail is kept (audit/store/): a SQLite path or postgresql://USER@HOST:PORT/DBNAME (its
    # password from the service's environment, never here). "": the service's config decides (audit_store,
    # else audit_log). A service whose config names another store refuses to start.
    store: str = ""


@dataclass(frozen=True)
class ReportPolicy:
    band: tuple[float, float] = (0.8, 1.25)
    min_group_size: int = 30
    n_boot: int = 100


@dataclass(frozen=True)
class Policy:
    version: str
    failure_mode: str = "closed"
    failure_status: str = "INTERNAL"
    # The whole audit of one request must finish within this, or the answer is withheld.
    time_budget_ms: float = 200.0
    exposure: ExposurePolicy = field(default_factory=ExposurePolicy)
    harm: HarmPolicy = field(default_factory=HarmPolicy)
    audience: AudiencePolicy = field(default_factory=AudiencePolicy)
    log: LogPolicy = field(default_factory=LogPolicy)
    report: ReportPolicy = field(default_factory=ReportPolicy)
    monitor: MonitorPolicy = field(default_factory=MonitorPolicy)
    exposure_window: ExposureWindowPolicy = field(default_factory=ExposureWindowPolicy)


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
    top = _take(data, "", {"version": str, "failure_mode": str, "failure_status": str, "time_budget_ms": (int, float),
                           "exposure": dict, "harm": dict, "audience": dict, "log": dict, "report": dict,
                           "monitor": dict, "exposure_window": dict})
    if "version" not in top or not top["version"]:
        raise ConfigError("policy key version is required (a non-empty string)")
    mode = top.get("failure_mode", "closed")
    if mode not in FAILURE_MODES:
        raise ConfigError(f"policy key failure_mode must be one of {', '.join(FAILURE_MODES)}; got {mode!r}")
    status = top.get("failure_status", "INTERNAL")
    if status not in FAILURE_STATUSES:
        raise ConfigError(f"policy key failure_status must be one of {', '.join(FAILURE_STATUSES)}; got {status!r}")
    budget = float(top.get("time_budget_ms", Policy.time_budget_ms))
    if not budget > 0:
        raise ConfigError(f"policy key time_budget_ms must be > 0; got {budget!r}")
    e = _take(top.get("exposure", {}), "exposure.", {
        "enabled": bool, "action": str, "min_selection_rate_ratio": (int, float),
        "min_exposure_ratio": (int, float), "min_group_size": int, "max_ndcg_loss": (int, float),
        "alpha": (int, float)})
    exposure = ExposurePolicy(
        enabled=e.get("enabled", True), action=_action(e.get("action", "FLAG"), "exposure.action"),
        min_selection_rate_ratio=_ratio(e.get("min_selection_rate_ratio", 0.8), "exposure.min_selection_rate_ratio"),
        min_exposure_ratio=_ratio(e.get("min_exposure_ratio", 0.8), "exposure.min_exposure_ratio"),
        min_group_size=e.get("min_group_size", 5),
        max_ndcg_loss=_ratio(e.get("max_ndcg_loss", ExposurePolicy.max_ndcg_loss), "exposure.max_ndcg_loss"),
        alpha=float(e.get("alpha", ExposurePolicy.alpha)))
    if not 0 < exposure.alpha < 0.5:
        raise ConfigError(f"policy key exposure.alpha must be in (0, 0.5); got {exposure.alpha!r}")
    if exposure.min_group_size < 1:
        raise ConfigError(f"policy key exposure.min_group_size must be >= 1; got {exposure.min_group_size}")
    h = _take(top.get("harm", {}), "harm.", {"enabled": bool, "action": str, "threshold": (int, float),
                                            "blocklist": list, "categories": dict})
    per_category = []
    for name, act in _take(h.get("categories", {}), "harm.categories.", {c: str for c in CATEGORIES}).items():
        if act not in CATEGORY_ACTIONS:
            raise ConfigError(f"policy key harm.categories.{name} must be one of {', '.join(CATEGORY_ACTIONS)}; "
                              f"got {act!r}")
        per_category.append((name, act))
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
                      blocklist=tuple(terms), categories=tuple(per_category))
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
    lg = _take(top.get("log", {}), "log.", {"audit_attributes": list, "synchronous": str, "write": str,
                                            "journal_max_mb": int, "store": str})
    journal_max_mb = lg.get("journal_max_mb", LogPolicy.journal_max_mb)
    if not 1 <= journal_max_mb <= 65536:
        raise ConfigError(f"policy key log.journal_max_mb must be between 1 and 65536; got {journal_max_mb}")
    store = lg.get("store", LogPolicy.store)
    if store:
        from audit.store import check_target

        # The password comes from where the service runs: not needed to read the policy (audit.report does).
        check_target(store, key="policy key log.store", need_password=False)
    sync = lg.get("synchronous", LogPolicy.synchronous)
    if sync not in ("NORMAL", "FULL"):
        raise ConfigError(f"policy key log.synchronous must be one of NORMAL, FULL; got {sync!r}")
    write = lg.get("write", LogPolicy.write)
    if write not in ("journal", "direct"):
        raise ConfigError(f"policy key log.write must be one of journal, direct; got {write!r}")
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
    return Policy(top["version"], mode, status, budget, exposure, harm, audience, LogPolicy(tuple(attrs), sync, write, journal_max_mb, store),
                  report, _monitor(top.get("monitor", {})), _exposure_window(top.get("exposure_window", {})))


def _exposure_window(table: dict[str, Any]) -> ExposureWindowPolicy:
    w = _take(table, "exposure_window.", {"enabled": bool, "window": int, "min_requests": int,
                                          "min_ratio": (int, float), "confidence": (int, float),
                                          "refresh_every": int, "max_busy_share": (int, float)})
    d = ExposureWindowPolicy()
    for key in ("window", "min_requests", "refresh_every"):
        if w.get(key, 1) < 1:
            raise ConfigError(f"policy key exposure_window.{key} must be >= 1; got {w[key]}")
    if w.get("min_requests", d.min_requests) > w.get("window", d.window):
        raise ConfigError("policy key exposure_window.min_requests must be <= exposure_window.window; got "
                          f"{w.get('min_requests', d.min_requests)} > {w.get('window', d.window)}")
    conf = float(w.get("confidence", d.confidence))
    if not 0.5 <= conf < 1:
        raise ConfigError(f"policy key exposure_window.confidence must be in [0.5, 1); got {conf!r}")
    ratio = float(w.get("min_ratio", d.min_ratio))
    if not 0 < ratio <= 1:
        raise ConfigError(f"policy key exposure_window.min_ratio must be in (0, 1]; got {ratio!r}")
    busy = float(w.get("max_busy_share", d.max_busy_share))
    if not 0 < busy <= 1:
        raise ConfigError(f"policy key exposure_window.max_busy_share must be in (0, 1]; got {busy!r}")
    return ExposureWindowPolicy(enabled=w.get("enabled", d.enabled), window=w.get("window", d.window),
                                min_requests=w.get("min_requests", d.min_requests), min_ratio=ratio,
                                confidence=conf, refresh_every=w.get("refresh_every", d.refresh_every),
                                max_busy_share=busy)


def _monitor(table: dict[str, Any]) -> MonitorPolicy:
    m = _take(table, "monitor.", {"enabled": bool, "window": int, "attributes": list, "intersections": list,
                                  "min_samples": int, "min_ratio": (int, float), "confidence": (int, float),
                                  "refresh_every": int, "n_boot": int, "max_busy_share": (int, float)})
    d = MonitorPolicy()
    attrs = m.get("attributes", list(d.attributes))
    if not all(isinstance(a, str) and a for a in attrs):
        raise ConfigError("policy key monitor.attributes must be a list of non-empty strings")
    inter = m.get("intersections", [list(x) for x in d.intersections])
    for i, combo in enumerate(inter):
        if not (isinstance(combo, list) and len(combo) >= 2 and all(isinstance(a, str) and a for a in combo)):
            raise ConfigError(f"policy key monitor.intersections[{i}] must be a list of at least two attribute names")
    for key in ("window", "min_samples", "refresh_every"):
        if m.get(key, 1) < 1:
            raise ConfigError(f"policy key monitor.{key} must be >= 1; got {m[key]}")
    if m.get("n_boot", d.n_boot) < 20:
        raise ConfigError(f"policy key monitor.n_boot must be >= 20; got {m['n_boot']}")
    conf = float(m.get("confidence", d.confidence))
    if not 0.5 <= conf < 1:
        raise ConfigError(f"policy key monitor.confidence must be in [0.5, 1); got {conf!r}")
    busy = float(m.get("max_busy_share", d.max_busy_share))
    if not 0 < busy <= 1:
        raise ConfigError(f"policy key monitor.max_busy_share must be in (0, 1]; got {busy!r}")
    return MonitorPolicy(enabled=m.get("enabled", d.enabled), window=m.get("window", d.window),
                         attributes=tuple(attrs), intersections=tuple(tuple(c) for c in inter),
                         min_samples=m.get("min_samples", d.min_samples),
                         min_ratio=_ratio(m.get("min_ratio", d.min_ratio), "monitor.min_ratio"), confidence=conf,
                         refresh_every=m.get("refresh_every", d.refresh_every), n_boot=m.get("n_boot", d.n_boot),
                         max_busy_share=busy)


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


# The policy sections that decide answers (not logging, reporting or time budgets).
ANSWER_SECTIONS = ("version", "exposure", "harm", "audience")


def answer_identity(policy: Policy) -> dict[str, Any]:
    """The policy's part of a pipeline's identity (recsys.pipeline.Pipeline.identity): its version and a
    sha256 of the sections that decide answers, in a JSON form that does not depend on hash seeds."""
    pol = {k: _canonical(getattr(policy, k, None)) for k in ANSWER_SECTIONS}
    return {"policy_version": policy.version,
            "policy_sha256": hashlib.sha256(json.dumps(pol, sort_keys=True).encode()).hexdigest()}


def _canonical(obj: Any) -> Any:
    """A JSON-able form that does not depend on hash seeds (sets sorted)."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (set, frozenset)):
        return sorted((_canonical(x) for x in obj), key=repr)
    if isinstance(obj, (list, tuple)):
        return [_canonical(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    return obj if isinstance(obj, (str, int, float, bool, type(None))) else repr(obj)
