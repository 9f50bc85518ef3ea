import sys, json, time, math
from pathlib import Path
import numpy as np, pandas as pd, torch
ROOT = Path(__file__).resolve().parents[2]; sys.path.insert(0, str(ROOT))
from audit.harm import normalise, deobfuscate
from audit.harm_suite import load_suite
from audit.harm_bert import split_indices
from recsys.encoder import base_model_path
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from sklearn.metrics import roc_auc_score, f1_score
torch.set_num_threads(2); torch.manual_seed(0)
FINE = ["none", "profanity-only", "harassment", "sexual", "hate", "dehumanisation", "threat"]
N_DAV = int(sys.argv[1]); EPOCHS = int(sys.argv[2]); TAG = sys.argv[3]
p = base_model_path(); tok = AutoTokenizer.from_pretrained(p)
model = AutoModelForSequenceClassification.from_pretrained(p, num_labels=7)
d = pd.read_csv(str(ROOT) + "/data/hate-speech-davidson/labeled_data.csv"); yd = d["class"].to_numpy()
tr, va, te = split_indices(yd, seed=0)
rng = np.random.default_rng(0)
# stratified-ish: keep all hate in the sample proportionally boosted: half hate-rich
sub = rng.choice(tr, N_DAV, replace=False)
s = load_suite(); ctr = s.cases("train"); cho = s.cases("heldout")
tids = sorted(ctr.template_id.unique()); val_t = {t for t in tids if int(t.rsplit("/",1)[1]) % 4 == 3}
cfit = ctr[~ctr.template_id.isin(val_t)]; cval = ctr[ctr.template_id.isin(val_t)]
texts, targets = [], []
for r in sub:
    t = np.zeros(7); c = yd[r]
    if c == 0: t[4] = 1
    elif c == 2: t[0] = 1
    else: t[[1, 2, 3]] = 1/3
    texts.append(d.tweet[r]); targets.append(t)
# suite: oversample each functionality to ~120 cases
for f, g in cfit.groupby("functionality"):
    reps = max(1, int(round(120 / len(g))))
    for _ in range(reps):
        for txt, cat in zip(g.text, g.category):
            t = np.zeros(7); t[FINE.index(cat) if cat != "none" else 0] = 1
            texts.append(txt); targets.append(t)
prep = [deobfuscate(normalise(x)) for x in texts]; Y = torch.tensor(np.array(targets), dtype=torch.float32)
n = len(prep); bs = 32; steps = EPOCHS * math.ceil(n / bs)
opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
warm = max(1, steps // 10); sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s+1)/warm, max(0.0, (steps-s)/max(1, steps-warm))))
print(f"{n} examples, {steps} steps", flush=True); t0 = time.time(); step = 0
model.train()
for ep in range(EPOCHS):
    perm = rng.permutation(n)
    for s0 in range(0, n, bs):
        ix = perm[s0:s0+bs]
        b = tok([prep[i] for i in ix], padding=True, truncation=True, max_length=64, return_tensors="pt")
        logits = model(**b).logits
        loss = torch.nn.functional.cross_entropy(logits, Y[ix])
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step(); step += 1
        if step % 25 == 0: print(step, f"{loss.item():.3f}", f"{time.time()-t0:.0f}s", flush=True)
model.eval()
def probs(ts):
    out = np.zeros((len(ts), 7)); pr = [deobfuscate(normalise(x)) for x in ts]; order = np.argsort([len(x) for x in pr])
    with torch.inference_mode():
        for s0 in range(0, len(pr), 128):
            ix = order[s0:s0+128]; b = tok([pr[i] for i in ix], padding=True, truncation=True, max_length=64, return_tensors="pt")
            out[ix] = torch.softmax(model(**b).logits, -1).numpy()
    return out
hc = pd.read_csv(str(ROOT.parent) + "/shared/data/hatecheck/test_suite_cases.csv")
res = {}
for name, ts in [("hc", hc.test_case.tolist()), ("ho", cho.text.tolist()), ("val", cval.text.tolist()), ("dval", d.tweet[va].tolist()),
                 ("dte", d.tweet[te].tolist())]:
    res[name] = probs(ts); print(name, "done", flush=True)
np.savez(f"/tmp/ft_{TAG}.npz", **res)
model.save_pretrained(f"/tmp/ft_{TAG}", safe_serialization=True); tok.save_pretrained(f"/tmp/ft_{TAG}")
H = [4,5,6]; yh = (hc.label_gold=="hateful").astype(int).to_numpy()
ph = res["hc"][:, H].sum(1); pho = res["ho"][:, H].sum(1)
print("HC AUC", roc_auc_score(yh, ph), "HO AUC", roc_auc_score(cho.label, pho), "OOD", roc_auc_score(np.r_[yh, cho.label], np.r_[ph, pho]))
print("dte hate AUC", roc_auc_score(yd[te]==0, res["dte"][:, H].sum(1)), "val suite AUC", roc_auc_score(cval.label, res["val"][:, H].sum(1)))
print(hc.assign(ok=((ph>=.5)==yh)).groupby("functionality").ok.mean().round(2).to_dict())
print(cho.assign(ok=((pho>=.5)==cho.label)).groupby("functionality").ok.mean().round(2).to_dict())
print("seconds", time.time()-t0)
