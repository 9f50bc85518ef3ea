import os, sys, json
from pathlib import Path
import numpy as np, pandas as pd
ROOT = Path(__file__).resolve().parents[2]; sys.path.insert(0, str(ROOT))
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, f1_score
from audit.harm_suite import load_suite
E = Path(os.environ.get("HARM_EMB_CACHE", "/tmp/harmwork/emb"))
def load(n): return np.load(E/f"{n}.npy"), json.loads((E/f"{n}.json").read_text())
Xs, ts = load("suite"); idx = {t:i for i,t in enumerate(ts)}
s = load_suite(); ctr = s.cases("train"); cho = s.cases("heldout")
def sx(df): return Xs[[idx[t] for t in df.text]]
Xh,_ = load("hatecheck"); hc = pd.read_csv(str(ROOT.parent) + "/shared/data/hatecheck/test_suite_cases.csv"); yh=(hc.label_gold=="hateful").astype(int).to_numpy()
Xmt,_=load("ml_titles"); Xtg,_=load("ml_tags"); X1k,_=load("ml100k_titles")
for C in [0.3, 1, 4, 16]:
    cnt = ctr.functionality.value_counts(); w = ctr.functionality.map(lambda f: 1/cnt[f]).to_numpy(); w = w/w.mean()
    lr = LogisticRegression(C=C, max_iter=2000).fit(sx(ctr), ctr.label, sample_weight=w)
    ph = lr.predict_proba(Xh)[:,1]; pho = lr.predict_proba(sx(cho))[:,1]
    yo = np.concatenate([yh, cho.label]); po = np.concatenate([ph, pho])
    print(C, "HC auc %.3f HO auc %.3f OOD %.3f" % (roc_auc_score(yh,ph), roc_auc_score(cho.label,pho), roc_auc_score(yo,po)),
          "ML@.5 %.4f %.4f %.4f" % tuple((lr.predict_proba(X)[:,1]>=.5).mean() for X in (Xmt,Xtg,X1k)))
    acc = hc.assign(ok=((ph>=.5)==yh)).groupby("functionality").ok.mean().round(2)
    print(" HC@.5", acc.to_dict())
    acc = cho.assign(ok=((pho>=.5)==cho.label)).groupby("functionality").ok.mean().round(2)
    print(" HO@.5", acc.to_dict())
