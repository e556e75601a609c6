#!/usr/bin/env python3
"""PyTorch twins of this project's models (bench/torch_models/<name>.py), for two jobs:

  /usr/bin/python3 bench/torch_models.py NAME --params [--opt key=value ...]
      prints the trainable parameter count that models/<name>.ts's self-test asserts;
  /usr/bin/python3 bench/torch_models.py NAME --size 128 --batch 4 --json [--opt ...]
      times a training step (forward, backward, Adam) and inference on this CPU, as
      ../shared/bench/torch_unet.py does for the U-Net (`npm run bench -- --model NAME --torch`).

Options are the model's YAML keys (`--opt base=16 --opt encoder=resnet18`); each twin's
build(in_channels, out_channels, **options) uses the same defaults as its TypeScript file.
Needs Debian's python3-torch (apt-get install -y python3-torch).
"""
import argparse, importlib.util, json, os, sys, time
import torch, torch.nn as nn


def load(name):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_models", name + ".py")
    if not os.path.exists(path):
        raise SystemExit(f"no PyTorch twin for '{name}': {path} not found")
    sys.path.insert(0, os.path.dirname(path))  # twins import their shared parts (parts.py, unet.py)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def value(s):
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(s.lower(), s)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--params", action="store_true")
    p.add_argument("--opt", action="append", default=[])
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=1)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    opts = dict((k, value(v)) for k, v in (o.split("=", 1) for o in a.opt))
    torch.manual_seed(0)
    m = load(a.name).build(a.in_channels, a.classes, **opts)
    params = sum(q.numel() for q in m.parameters() if q.requires_grad)
    if a.params:
        print(params)
        return
    torch.set_num_threads(a.threads)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x = torch.randn(a.batch, a.in_channels, a.size, a.size)
    if a.classes == 1:
        y = (torch.rand(a.batch, 1, a.size, a.size) > 0.5).float(); loss_fn = nn.BCEWithLogitsLoss()
    else:
        y = torch.randint(0, a.classes, (a.batch, a.size, a.size)); loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(); l = loss_fn(m(x), y); l.backward(); opt.step(); return l.item()

    m.train(); step()
    t = time.perf_counter()
    for _ in range(a.steps): step()
    train = a.batch * a.steps / (time.perf_counter() - t)
    m.eval()
    with torch.no_grad():
        m(x); t = time.perf_counter()
        for _ in range(a.steps): m(x)
        infer = a.batch * a.steps / (time.perf_counter() - t)
    r = {"engine": f"pytorch {torch.__version__}", "model": a.name, "options": opts, "threads": a.threads, "size": a.size,
         "batch": a.batch, "params": params, "train_images_per_s": round(train, 3), "infer_images_per_s": round(infer, 3)}
    print(json.dumps(r) if a.json else r)


if __name__ == "__main__":
    main()
