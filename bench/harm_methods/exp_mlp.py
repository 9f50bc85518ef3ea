import os, sys, json
from pathlib import Path
import numpy as np, pandas as pd
ROOT = Path(__file__).resolve().parents[2]; sys.path.insert(0, str(ROOT))
from sklearn.neural_network import MLPClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC
from sklearn.metrics import roc_auc_score
from audit.harm_suite import load_suite
E = Path(os.environ.get("HARM_EMB_CACHE", "/tmp/harmwork/emb"))
ts = json.loads((E/"suite.json").read_text()); idx = {t:i for i,t in enumerate(ts)}
Xs = np.load(E/"suite.npy"); Xh = np.load(E/"hatecheck.npy")
s = load_suite(); ctr = s.cases("train"); cho = s.cases("heldout")
hc = pd.read_csv(str(ROOT.parent) + "/shared/data/hatecheck/test_suite_cases.csv"); yh=(hc.label_gold=="hateful").astype(int).to_numpy()
Xtr = Xs[[idx[t] for t in ctr.text]]; Xho = Xs[[idx[t] for t in cho.text]]
def ev(name, f):
    ph, pho = f(Xh), f(Xho); yo = np.r_[yh, cho.label]; po = np.r_[ph, pho]
    print(f"{name:20s} HC {roc_auc_score(yh,ph):.3f} HO {roc_auc_score(cho.label,pho):.3f} OOD {roc_auc_score(yo,po):.3f}", flush=True)
for a in [1e-3, 1e-2, 1e-1]:
    m = MLPClassifier((256,), alpha=a, max_iter=500, random_state=0, early_stopping=False).fit(Xtr, ctr.label)
    ev(f"mlp a={a}", lambda X: m.predict_proba(X)[:,1])
for C in [1, 10]:
    m = SVC(C=C, kernel="rbf", probability=False).fit(Xtr, ctr.label); ev(f"svc C={C}", m.decision_function)
# prototype: cosine to mean of hateful minus mean of non-hateful per functionality centroids
cents = {f: Xtr[(ctr.functionality==f).to_numpy()].mean(0) for f in ctr.functionality.unique()}
hf = [f for f in cents if ctr[ctr.functionality==f].label.iloc[0]==1]; nf = [f for f in cents if f not in hf]
def proto(X):
    H = np.stack([cents[f] for f in hf]); N = np.stack([cents[f] for f in nf])
    return (X@H.T).max(1) - (X@N.T).max(1)
ev("prototype", proto)
