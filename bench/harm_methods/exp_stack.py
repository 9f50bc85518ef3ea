exec(open(__file__.rsplit("/", 1)[0] + "/common.py").read())
from sklearn.linear_model import LogisticRegression
def fit_lr(C, **kw):
    X, y, w = train_set(**kw)
    lr = LogisticRegression(C=C, max_iter=3000).fit(X, y, sample_weight=w / w.mean())
    def predict(Z):
        P = np.zeros((len(Z), 7)); P[:, lr.classes_] = lr.predict_proba(Z); return P
    return predict
A = fit_lr(1, use_dav=False); B = fit_lr(1, use_suite=False)
def lg(p): p = np.clip(p, 1e-6, 1-1e-6); return np.log(p/(1-p))
def feats(Z): return np.c_[lg(hate_p(A(Z))), lg(hate_p(B(Z)))]
Fv = np.r_[feats(Xd[va]), feats(sx(cval))]; yv = np.r_[(yd[va]==0).astype(int), cval.label.to_numpy()]
wv = np.r_[np.full(len(va), .5/len(va)), np.full(len(cval), .5/len(cval))]
for C in [0.1, 1, 10]:
    st = LogisticRegression(C=C).fit(Fv, yv, sample_weight=wv/wv.mean()); print("stack coef", st.coef_, st.intercept_)
    def predict(Z):
        p = st.predict_proba(feats(Z))[:, 1]; P = np.zeros((len(Z), 7)); P[:, 4] = p; P[:, 0] = 1 - p; return P
    show(report(f"stack suiteLR+davLR C={C}", predict, thr_val))
