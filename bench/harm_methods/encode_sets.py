import os, sys, json, time, hashlib
from pathlib import Path
import numpy as np, pandas as pd
ROOT = Path(__file__).resolve().parents[2]; sys.path.insert(0, str(ROOT))
from audit.harm import normalise, deobfuscate
from recsys.encoder import TextEncoder, base_model_path
import torch
torch.set_num_threads(2)
out = Path(os.environ.get("HARM_EMB_CACHE", "/tmp/harmwork/emb"))
enc = TextEncoder.load(base_model_path(), device="cpu", precision="fp32")
def prep(ts): return [deobfuscate(normalise(t)) for t in ts]
sets = {}
names = sys.argv[1:]
for name in names:
    if name == "davidson":
        d = pd.read_csv(str(ROOT) + "/data/hate-speech-davidson/labeled_data.csv"); texts = d["tweet"].astype(str).tolist()
    elif name == "hatecheck":
        texts = pd.read_csv(str(ROOT.parent) + "/shared/data/hatecheck/test_suite_cases.csv")["test_case"].astype(str).tolist()
    elif name == "ml_titles":
        texts = pd.read_csv(str(ROOT) + "/data/ml-latest-small/movies.csv")["title"].astype(str).tolist()
    elif name == "ml_tags":
        t = pd.read_csv(str(ROOT) + "/data/ml-latest-small/tags.csv")["tag"].dropna().astype(str).str.strip()
        texts = sorted(set(x for x in t if x))
    elif name == "ml100k_titles":
        texts = pd.read_csv(str(ROOT.parent) + "/shared/data/ml-100k/u.item", sep="|", header=None, encoding="latin-1")[1].astype(str).tolist()
    elif name.startswith("file:"):
        p = name[5:]; texts = json.loads(Path(p).read_text()); name = Path(p).stem
    t0 = time.time()
    X = enc.encode(prep(texts), max_length=128, batch_size=64)
    np.save(out / f"{name}.npy", X)
    (out / f"{name}.json").write_text(json.dumps(texts))
    print(name, len(texts), f"{time.time()-t0:.0f}s", flush=True)
