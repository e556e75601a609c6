"""The project's training recipe in TensorFlow: which parts of a run's config.yaml the bridge
trains with, the losses (training/losses/, training/loss_context.ts), the learning-rate
schedules with their warm-up (training/lr_schedule.ts, training/schedules/) and the
optimizers' updates (training/optimizers/, backends/ops.ts adamStep), each written to give
the same numbers as the TypeScript.
"""
import math

import tensorflow as tf

from .errors import UserError

EPS = 1e-7  # training/loss_context.ts EPS

# The project's defaults (utils/config.ts and the parts' own schemas) for a run without a config.
DEFAULT_TRAINING = {
    "batch_size": 4, "epochs": 20, "seed": 42, "val_interval": 1, "threshold": 0.5,
    "loss": {"name": "bce+dice", "smooth": 1, "per_image": False},
    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 0, "lr_mult": {}},
    "lr_schedule": {"name": "poly", "warmup_iters": 0, "warmup_ratio": 0.1, "power": 0.9, "min_lr": 0},
    "augmentations": {},
}
SUPPORTED_LOSSES = ("bce", "ce", "dice")
SUPPORTED_OPTIMIZERS = ("adam", "adamw", "sgd")
SUPPORTED_SCHEDULES = ("constant", "poly", "cosine", "step")
SUPPORTED_AUGMENTATIONS = ("scale", "crop", "hflip", "vflip", "rotate", "brightness", "contrast", "saturation", "hue", "noise")


def read_recipe(config_yaml, read_bytes):
    """training: (and checkpoint.save_every_iters) of a run's config.yaml, the resolved config
    that `npx train` writes to <results.root>/<name>/config.yaml and beside its checkpoints.
    None: the project's defaults (bce+dice, Adam 1e-3, poly 0.9, no augmentation)."""
    import copy
    t = copy.deepcopy(DEFAULT_TRAINING)
    if config_yaml is None:
        return t
    import yaml  # PyYAML: only when a config is read
    try:
        cfg = yaml.safe_load(read_bytes(config_yaml, 4 * 1024 * 1024).decode("utf8", "replace"))
    except yaml.YAMLError as e:
        raise UserError(f"{config_yaml}: not valid YAML ({str(e).splitlines()[0]})")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("training"), dict):
        raise UserError(f"{config_yaml}: not a run's config.yaml (no training: section); give <results.root>/<name>/config.yaml")
    got = cfg["training"]
    for k in ("batch_size", "epochs", "iterations", "seed", "val_interval", "threshold", "grad_clip"):
        if got.get(k) is not None:
            t[k] = got[k]
    for k in ("loss", "optimizer", "lr_schedule"):
        if isinstance(got.get(k), dict):
            t[k] = {**t[k], **got[k]}
    t["augmentations"] = {k: v for k, v in (got.get("augmentations") or {}).items() if v is not None}
    t["save_every_iters"] = (cfg.get("checkpoint") or {}).get("save_every_iters", 0)
    t["data"] = cfg.get("data") or {}
    check_recipe(t, config_yaml)
    return t


def check_recipe(t, where):
    """Parts the bridge does not implement are refused by name, never silently dropped."""
    names = loss_names(t["loss"]["name"])
    bad = [n for n in names if n not in SUPPORTED_LOSSES]
    if bad:
        raise UserError(f"{where}: training.loss.name '{t['loss']['name']}': the bridge implements {', '.join(SUPPORTED_LOSSES)}, not {', '.join(bad)}")
    for k in ("ohem", "boundary"):
        if t["loss"].get(k):
            raise UserError(f"{where}: training.loss.{k} is not implemented by the bridge")
    if t["optimizer"]["name"] not in SUPPORTED_OPTIMIZERS:
        raise UserError(f"{where}: training.optimizer.name '{t['optimizer']['name']}': the bridge implements {', '.join(SUPPORTED_OPTIMIZERS)}")
    if t["lr_schedule"]["name"] not in SUPPORTED_SCHEDULES:
        raise UserError(f"{where}: training.lr_schedule.name '{t['lr_schedule']['name']}': the bridge implements {', '.join(SUPPORTED_SCHEDULES)}")
    aug = t["augmentations"]
    bad = [k for k in aug if k not in SUPPORTED_AUGMENTATIONS]
    if bad:
        raise UserError(f"{where}: training.augmentations.{bad[0]} is not implemented by the bridge")
    if (aug.get("crop") or {}).get("focus"):
        raise UserError(f"{where}: training.augmentations.crop.focus is not implemented by the bridge")


def loss_names(name):
    return [s.strip().lower() for s in str(name).split("+")]


# --- losses ---------------------------------------------------------------------------------

def build_loss(loss_cfg, num_classes, ignore):
    """loss(logits [N,H,W,C], labels [N,H,W] int) -> scalar, as buildLoss in training/losses.ts:
    the weighted sum of the named parts over one batch. C = 1: one sigmoid output (labels 0/1),
    else softmax; pixels labelled `ignore` count in no part."""
    names = loss_names(loss_cfg["name"])
    weights = loss_cfg.get("weights") or [1] * len(names)
    if len(weights) != len(names):
        raise UserError(f"training.loss.weights: expected {len(names)} numbers (one per loss in '{loss_cfg['name']}'), got {len(weights)}")
    cw = loss_cfg.get("class_weights")
    if cw is not None and len(cw) != num_classes:
        raise UserError(f"training.loss.class_weights: expected {num_classes} numbers (data.num_classes), got {len(cw)}")
    smooth = float(loss_cfg.get("smooth", 1))
    per_image = bool(loss_cfg.get("per_image", False))
    parts = [(n, float(w)) for n, w in zip(names, weights) if w != 0]

    def loss(logits, labels):
        logits = tf.cast(logits, tf.float32)
        labels = tf.cast(labels, tf.int32)
        c = logits.shape[-1]
        valid = tf.cast(tf.not_equal(labels, ignore), tf.float32)
        if c == 1:
            x = logits[..., 0]
            y = tf.cast(tf.equal(labels, 1), tf.float32) * valid
        else:
            # -1 is outside [0, C): one_hot leaves ignored pixels' rows empty.
            oh = tf.one_hot(tf.where(tf.not_equal(labels, ignore), labels, -tf.ones_like(labels)), c)
            logp = tf.nn.log_softmax(logits)
        total = tf.constant(0.0)
        for name, w in parts:
            if name in ("bce", "ce"):
                # crossEntropy: softplus(x) - x*y for one output, else -log p[label].
                per = tf.nn.softplus(x) - x * y if c == 1 else -tf.reduce_sum(logp * oh, -1)
                if cw is None:
                    pw = valid
                elif c == 1:
                    pw = valid * cw[0] + y * (cw[1] - cw[0])
                else:
                    pw = tf.reduce_sum(oh * tf.constant(cw, tf.float32), -1)
                v = tf.reduce_sum(per * pw) / tf.maximum(tf.reduce_sum(pw), 1e-12)
            else:  # dice: softOverlap + oneMinusMean
                axes = [1, 2] if per_image else [0, 1, 2]
                if c == 1:
                    p = tf.sigmoid(x) * valid
                    shape = [-1, 1] if per_image else [1]
                    inter = tf.reshape(tf.reduce_sum(p * y, axes), shape)
                    sums = tf.reshape(tf.reduce_sum(p, axes) + tf.reduce_sum(y, axes), shape)
                else:
                    p = tf.exp(logp) * valid[..., None]
                    inter = tf.reduce_sum(p * oh, axes)
                    sums = tf.reduce_sum(p, axes) + tf.reduce_sum(oh, axes)
                s = smooth + EPS
                score = (2 * inter + s) / (sums + s)
                if cw is None or c == 1:
                    v = 1 - tf.reduce_mean(score)
                else:
                    row = tf.reduce_sum(score * tf.constant(cw, tf.float32), -1) / max(EPS, sum(cw))
                    v = 1 - tf.reduce_mean(row)
            total = total + (v if w == 1 else v * w)
        return total

    return loss


# --- learning rate ----------------------------------------------------------------------------

def lr_at(s, base_lr, it, total, per_epoch):
    """lrAt in training/lr_schedule.ts: the rate of the step with 0-based index `it`."""
    t = min(max(it, 0), max(total, 1))
    frac = t / total if total > 0 else 0
    name = s["name"]
    min_lr = min(float(s.get("min_lr", 0)), base_lr)
    if name == "constant":
        lr = base_lr
    elif name == "poly":
        lr = min_lr + (base_lr - min_lr) * math.pow(1 - frac, float(s.get("power", 0.9)))
    elif name == "cosine":
        lr = min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * frac))
    elif name == "step":
        epoch = math.floor(max(it, 0) / max(per_epoch, 1))
        lr = max(min_lr, base_lr * math.pow(float(s.get("gamma", 0.1)), math.floor(epoch / int(s.get("step_size", 30)))))
    else:
        raise UserError(f"training.lr_schedule.name '{name}' is not implemented by the bridge")
    wi = int(s.get("warmup_iters", 0))
    if wi > 0 and it < wi:
        lr *= float(s.get("warmup_ratio", 0.1)) + (1 - float(s.get("warmup_ratio", 0.1))) * (max(it, 0) / wi)
    return lr


# --- optimizers -------------------------------------------------------------------------------

class Optimizer:
    """training/optimizers/{adam,adamw,sgd}.ts over tf variables: the slots are variables keyed
    by the weight's name (its Keras path, the project's weight name), weight decay only on the
    weights whose name holds 'kernel' (the project's decay filter), lr_mult by the longest key a
    name contains, and the update in cross-replica context (strategy.extended.update), so it
    runs under MirroredStrategy and MultiWorkerMirroredStrategy alike."""

    def __init__(self, o, variables, names):
        self.name = o["name"]
        self.wd = float(o.get("weight_decay", 0) or 0)
        self.beta1 = float(o.get("beta1", 0.9))
        self.beta2 = float(o.get("beta2", 0.999))
        self.epsilon = float(o.get("epsilon", 1e-7))
        self.momentum = float(o.get("momentum", 0.9))
        self.nesterov = bool(o.get("nesterov", False))
        mult = o.get("lr_mult") or {}
        keys = sorted(mult, key=lambda k: (-len(k), k))
        for k in keys:
            if not any(k in n for n in names):
                raise UserError(f"training.optimizer.lr_mult: '{k}' is in no trainable weight's name (they read like '{names[0]}')")
        self.vars = variables
        self.names = names
        self.mults = [next((float(mult[k]) for k in keys if k in n), 1.0) for n in names]
        self.decays = [self.wd if self.wd > 0 and "kernel" in n else 0.0 for n in names]
        slot_names = ["m", "v"] if self.name in ("adam", "adamw") else (["momentum"] if self.momentum > 0 else [])
        self.slots = {s: [tf.Variable(tf.zeros_like(v), trainable=False, name=f"{s}_{i}") for i, v in enumerate(variables)] for s in slot_names}

    def checkpointables(self):
        return {s: list(vs) for s, vs in self.slots.items()}

    def apply(self, strategy, grads, lr, step):
        """In cross-replica context (merge_call): `step` is the 1-based count of updates."""
        step = tf.cast(step, tf.float32)
        bc1 = 1 - tf.pow(self.beta1, step)
        bc2 = 1 - tf.pow(self.beta2, step)
        for i, (var, g) in enumerate(zip(self.vars, grads)):
            slots = [self.slots[s][i] for s in self.slots]
            rate = lr * self.mults[i]
            decay = self.decays[i]
            strategy.extended.update(var, self._update, args=(g, rate, decay, bc1, bc2, *slots), group=False)

    def _update(self, w, g, lr, decay, bc1, bc2, *slots):
        if self.name in ("adam", "adamw"):
            m, v = slots
            decoupled = self.name == "adamw"
            grad = g + w * decay if decay > 0 and not decoupled else g  # Adam: L2 in the gradient
            m2 = m * self.beta1 + grad * (1 - self.beta1)
            v2 = v * self.beta2 + tf.square(grad) * (1 - self.beta2)
            denom = tf.sqrt(v2) / tf.sqrt(bc2) + self.epsilon
            base = w * (1 - lr * decay) if decoupled and decay > 0 else w  # AdamW: decoupled decay
            m.assign(m2)
            v.assign(v2)
            return w.assign(base - (m2 / denom) * (lr / bc1))
        grad = g + w * decay if decay > 0 else g  # sgd: L2
        if self.momentum == 0:
            return w.assign(w - grad * lr)
        (buf,) = slots
        b2 = buf * self.momentum + grad
        buf.assign(b2)
        upd = grad + b2 * self.momentum if self.nesterov else b2
        return w.assign(w - upd * lr)
