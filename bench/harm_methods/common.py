"""Experiments: heads on frozen MiniLM embeddings (cached), selection on validation, OOD report."""
import os, sys, json, time
from pathlib import Path
import numpy as np, pandas as pd
ROOT = Path(__file__).resolve().parents[2]; sys.path.insert(0, str(ROOT))
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, f1_score
from audit.harm_suite import load_suite
from audit.harm_bert import split_indices
E = Path(os.environ.get("HARM_EMB_CACHE", "/tmp/harmwork/emb"))
def load(name): return np.load(E / f"{name}.npy"), json.loads((E / f"{name}.json").read_text())
FINE = ["none", "profanity-only", "harassment", "sexual", "hate", "dehumanisation", "threat"]
HATE = [4, 5, 6]; LESS = [1, 2, 3]
Xd, td = load("davidson"); d = pd.read_csv(str(ROOT) + "/data/hate-speech-davidson/labeled_data.csv")
yd = d["class"].to_numpy()
tr, va, te = split_indices(yd, seed=0)
Xs, ts = load("suite"); suite = load_suite()
idx = {t: i for i, t in enumerate(ts)}
ctr = suite.cases("train"); cho = suite.cases("heldout")
# validation templates: every 4th train template of each functionality
tids = sorted(ctr.template_id.unique())
val_t = {t for t in tids if int(t.rsplit("/", 1)[1]) % 4 == 3}
cfit = ctr[~ctr.template_id.isin(val_t)]; cval = ctr[ctr.template_id.isin(val_t)]
def sx(df): return Xs[[idx[t] for t in df.text]]
def fine_of(df): return np.array([FINE.index(c) if c != "none" else 0 for c in df.category])
Xh, th = load("hatecheck"); hc = pd.read_csv(str(ROOT.parent) + "/shared/data/hatecheck/test_suite_cases.csv")
yh = (hc.label_gold == "hateful").astype(int).to_numpy()
Xmt, _ = load("ml_titles"); Xtg, _ = load("ml_tags"); X1k, _ = load("ml100k_titles")

def train_set(davidson_off="soft", w_suite=1.0, use_suite=True, use_dav=True, dav_rows=None):
    X, y, w = [], [], []
    if use_dav:
        rows = tr if dav_rows is None else np.random.default_rng(0).choice(tr, dav_rows, replace=False)
        for r in rows:
            c = yd[r]
            if c == 0: X.append(r); y.append(4); w.append(1.0)
            elif c == 2: X.append(r); y.append(0); w.append(1.0)
            else:
                if davidson_off == "soft":
                    for k in LESS: X.append(r); y.append(k); w.append(1/3)
                else: X.append(r); y.append(FINE.index(davidson_off)); w.append(1.0)
    Xa = Xd[X] if X else np.zeros((0, Xd.shape[1]), np.float32); ya = np.array(y); wa = np.array(w)
    if use_suite:
        Xsu = sx(cfit); ysu = fine_of(cfit)
        # balance: each functionality gets the same total weight
        cnt = cfit.functionality.value_counts(); wf = cfit.functionality.map(lambda f: 1.0 / cnt[f]).to_numpy()
        wf = wf / wf.sum() * len(cfit) * w_suite
        Xa = np.vstack([Xa, Xsu]); ya = np.concatenate([ya, ysu]); wa = np.concatenate([wa, wf])
    return Xa, ya.astype(int), wa

def hate_p(P): return P[:, HATE].sum(1)
def report(name, predict, thr_fn):
    # validation
    pv_d = hate_p(predict(Xd[va])); yv_d = (yd[va] == 0).astype(int)
    pv_s = hate_p(predict(sx(cval))); yv_s = cval.label.to_numpy()
    thr = thr_fn(pv_d, yv_d, pv_s, yv_s)
    out = {"name": name, "thr": thr}
    ph = hate_p(predict(Xh)); pho = hate_p(predict(sx(cho))); yho = cho.label.to_numpy()
    pt = hate_p(predict(Xd[te])); yt = (yd[te] == 0).astype(int); yt_harm = (yd[te] != 2).astype(int)
    out["val_suite_auc"] = roc_auc_score(yv_s, pv_s); out["val_dav_auc"] = roc_auc_score(yv_d, pv_d)
    out["hc_auc"] = roc_auc_score(yh, ph); out["hc_f1"] = f1_score(yh, ph >= thr, average="macro")
    out["ho_auc"] = roc_auc_score(yho, pho); out["ho_f1"] = f1_score(yho, pho >= thr, average="macro")
    yo = np.concatenate([yh, yho]); po = np.concatenate([ph, pho])
    out["ood_auc"] = roc_auc_score(yo, po); out["ood_f1"] = f1_score(yo, po >= thr, average="macro")
    out["dav_te_auc_hate"] = roc_auc_score(yt, pt)
    out["ml_titles"] = float((hate_p(predict(Xmt)) >= thr).mean()); out["ml_tags"] = float((hate_p(predict(Xtg)) >= thr).mean())
    out["ml100k"] = float((hate_p(predict(X1k)) >= thr).mean())
    acc_ho = cho.assign(ok=((pho >= thr).astype(int) == yho)).groupby("functionality").ok.mean()
    acc_hc = hc.assign(ok=((ph >= thr).astype(int) == yh)).groupby("functionality").ok.mean()
    out["ho_func"] = acc_ho.round(3).to_dict(); out["hc_func"] = acc_hc.round(3).to_dict()
    idm = cho.functionality.isin(["identity_neutral", "identity_positive"])
    out["id_fpr_max_ho"] = float(cho[idm].assign(f=(pho[idm.to_numpy()] >= thr)).groupby("group").f.mean().max())
    hid = hc.functionality.isin(["ident_neutral_nh", "ident_pos_nh"]).to_numpy()
    out["id_fpr_max_hc"] = float(hc[hid].assign(f=(ph[hid] >= thr)).groupby("target_ident").f.mean().max())
    return out

def thr_val(pv_d, yv_d, pv_s, yv_s, benign=None):
    grid = np.linspace(0.02, 0.98, 97)
    best, bt = -1, 0.5
    for t in grid:
        f = 0.5 * f1_score(yv_d, pv_d >= t, average="macro") + 0.5 * f1_score(yv_s, pv_s >= t, average="macro")
        if f > best: best, bt = f, t
    return float(bt)

def show(o):
    print(f"{o['name']:40s} thr {o['thr']:.2f} | OOD AUC {o['ood_auc']:.3f} F1 {o['ood_f1']:.3f} | HC {o['hc_auc']:.3f}/{o['hc_f1']:.3f} | HO {o['ho_auc']:.3f}/{o['ho_f1']:.3f} | val-suite {o['val_suite_auc']:.3f} val-dav {o['val_dav_auc']:.3f} | dav-te {o['dav_te_auc_hate']:.3f} | ML {o['ml_titles']:.4f} {o['ml_tags']:.4f} {o['ml100k']:.4f} | idFPR {o['id_fpr_max_ho']:.2f} {o['id_fpr_max_hc']:.2f}", flush=True)
