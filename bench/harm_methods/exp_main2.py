exec(open(__file__.rsplit("/", 1)[0] + "/common.py").read())
from sklearn.linear_model import LogisticRegression
def fit_lr(C, **kw):
    X, y, w = train_set(**kw)
    lr = LogisticRegression(C=C, max_iter=3000).fit(X, y, sample_weight=w / w.mean())
    def predict(Z):
        P = np.zeros((len(Z), 7)); P[:, lr.classes_] = lr.predict_proba(Z); return P
    return predict
show(report("LR suite only C=1", fit_lr(1, use_dav=False), thr_val))
show(report("LR suite only C=4", fit_lr(4, use_dav=False), thr_val))
show(report("LR dav+suite w=3 C=1", fit_lr(1, w_suite=3), thr_val))
show(report("LR dav+suite w=10 C=1", fit_lr(1, w_suite=10), thr_val))
show(report("LR dav+suite w=10 C=4", fit_lr(4, w_suite=10), thr_val))
