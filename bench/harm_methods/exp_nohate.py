exec(open(__file__.rsplit("/", 1)[0] + "/common.py").read())
from sklearn.linear_model import LogisticRegression
X, y, w = train_set()
def fit(mask_fn, wd, C=1):
    X, y, w = train_set()
    nd = len(y) - len(cfit)
    keep = mask_fn(y, nd); w = w.copy(); w[:nd] *= wd
    lr = LogisticRegression(C=C, max_iter=3000).fit(X[keep], y[keep], sample_weight=w[keep] / w[keep].mean())
    def predict(Z):
        P = np.zeros((len(Z), 7)); P[:, lr.classes_] = lr.predict_proba(Z); return P
    return predict
drop_hate = lambda y, nd: ~((np.arange(len(y)) < nd) & (y == 4))
allrows = lambda y, nd: np.ones(len(y), bool)
show(report("dav(no hate)+suite", fit(drop_hate, 1.0), thr_val))
show(report("dav(no hate) w.2 +suite", fit(drop_hate, 0.2), thr_val))
show(report("dav w.1 +suite", fit(allrows, 0.1), thr_val))
show(report("dav w.03 +suite", fit(allrows, 0.03), thr_val))
