exec(open(__file__.rsplit("/", 1)[0] + "/common.py").read())
from sklearn.linear_model import LogisticRegression
def fit_lr(C, **kw):
    X, y, w = train_set(**kw)
    lr = LogisticRegression(C=C, max_iter=3000).fit(X, y, sample_weight=w / w.mean())
    def predict(Z):
        P = np.zeros((len(Z), 7)); P[:, lr.classes_] = lr.predict_proba(Z); return P
    return predict
for C in [0.3, 1, 4]:
    show(report(f"LR dav+suite C={C}", fit_lr(C), thr_val))
show(report("LR dav only C=1", fit_lr(1, use_suite=False), thr_val))
show(report("LR suite only C=1", fit_lr(1, use_dav=False), thr_val))
show(report("LR dav+suite w=3 C=1", fit_lr(1, w_suite=3), thr_val))
show(report("LR dav+suite off->harass C=1", fit_lr(1, davidson_off="harassment"), thr_val))
show(report("LR dav4000+suite C=1", fit_lr(1, dav_rows=4000), thr_val))
