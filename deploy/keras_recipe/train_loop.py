"""keras_bridge.py train: the project's recipe (recipe.py, augment.py) in one custom training loop
under tf.distribute, for one machine and for several.

TF_CONFIG set: MultiWorkerMirroredStrategy (Keras 3's model.fit fails under it here with
`Attempt to convert a value (PerReplica...)`, so the loop is strategy.run + all-reduce, the same
loop on one machine); else MirroredStrategy over the local GPUs, or the CPU. Each worker reads
its shard of every epoch's order (a permutation drawn from the seed and the epoch, the i-th
worker taking every W-th pair); all workers log progress to stderr; only the chief writes the
model and the checkpoints, the others write theirs to a temporary folder that they remove (as
the TensorFlow multi-worker guide does). A job started again finds the last checkpoint
(tf.train.CheckpointManager: model, optimizer slots, step) and continues from its step.
"""
import json
import os
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from . import augment as aug_mod
from .errors import UserError
from .recipe import Optimizer, build_loss, lr_at, read_recipe


def pick_strategy():
    """(strategy, worker index, number of workers, is_chief, description)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        s = tf.distribute.MirroredStrategy()
        return s, 0, 1, True, f"MirroredStrategy over {s.num_replicas_in_sync} device(s)"
    try:
        cfg = json.loads(raw)
        cluster, task = cfg["cluster"], cfg["task"]
        kind, index = task["type"], int(task["index"])
        assert kind in cluster and 0 <= index < len(cluster[kind])
    except (ValueError, KeyError, TypeError, AssertionError):
        raise UserError('TF_CONFIG: expected {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}} with the task in the cluster')
    s = tf.distribute.MultiWorkerMirroredStrategy()
    has_chief = "chief" in cluster
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief)
    number = 0 if kind == "chief" else index + (1 if has_chief else 0)
    return s, number, workers, is_chief, f"MultiWorkerMirroredStrategy: worker {number} of {workers} ({kind} {index}{', chief' if is_chief else ''}), {s.num_replicas_in_sync} replica(s) in sync"


def log(worker, workers, msg):
    print(f"[worker {worker}/{workers}] {msg}", file=sys.stderr, flush=True)


class Data:
    """Image/mask files -> (network input, class ids), optionally augmented as the recipe says."""

    def __init__(self, kb, meta, read_mask, aug, seed):
        self.meta, self.read_mask, self.aug, self.seed = meta, read_mask, aug, seed
        self.load_image = kb.load_image(meta)
        self.normalize = kb.normalizer(meta)
        self.ignore = meta["ignore_index"]

    def load(self, image, mask, epoch, pos):
        h, w = self.meta["input"]["size"]
        oh, ow = self.aug["crop"]["size"] if self.aug.get("crop") else (h, w)
        x = self.load_image(image)  # 0..255 at data.size
        y = tf.numpy_function(lambda f: self.read_mask((f if isinstance(f, bytes) else f.item()).decode()), [mask], tf.int32)
        if self.aug:
            def moved(img, m, e, p):
                # A sample's draws depend on (seed, epoch, the pair's index) alone: a resumed
                # run or another sharding draws the same for the same sample.
                rng = np.random.default_rng([self.seed & 0xFFFFFFFF, int(e), int(p)])
                a, b = aug_mod.augment(img, m, self.aug, rng, self.ignore)
                return a.astype(np.float32), b.astype(np.int32)
            x, y = tf.numpy_function(moved, [x, y, epoch, pos], [tf.float32, tf.int32])
        x.set_shape((oh, ow, 3))
        y.set_shape((oh, ow))
        return self.normalize(x), y


def epoch_order(n, seed, epoch):
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, 7]).permutation(n)


def metrics(model, files, data_load, meta, threshold, batch=8):
    """training/metrics.ts on the val pairs at the network's input size, no test-time
    augmentation: the confusion matrix (mIoU, mDice, pixel_acc, mean_acc) and, for binary
    exports, foreground iou/dice and the per-image scores."""
    n, ignore = meta["num_classes"], meta["ignore_index"]
    cm = np.zeros((n, n), np.float64)
    ious, dices = [], []
    for i in range(0, len(files), batch):
        xs, ys = zip(*[data_load(tf.constant(a), tf.constant(b), tf.constant(0, tf.int64), tf.constant(0, tf.int64)) for a, b in files[i:i + batch]])
        logits = model(tf.stack(xs), training=False).numpy()
        gt = np.stack([y.numpy() for y in ys])
        if logits.shape[-1] == 1:
            pred = (1 / (1 + np.exp(-logits[..., 0])) >= threshold).astype(np.int64)
        else:
            pred = logits.argmax(-1)
        for p, g in zip(pred, gt):
            keep = g != ignore
            cm += np.bincount(g[keep].astype(np.int64) * n + p[keep], minlength=n * n).reshape(n, n)
            if n == 2:
                tp = np.sum((p == 1) & (g == 1) & keep)
                fp = np.sum((p == 1) & (g != 1) & keep)
                fn = np.sum((p != 1) & (g == 1) & keep)
                u = tp + fp + fn
                ious.append(1.0 if u == 0 else tp / u)
                dices.append(1.0 if u == 0 else 2 * tp / (2 * tp + fp + fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        tp = np.diag(cm)
        gt_c, pred_c = cm.sum(1), cm.sum(0)
        iou = np.where(gt_c + pred_c - tp > 0, tp / (gt_c + pred_c - tp), np.nan)
        dice = np.where(gt_c + pred_c > 0, 2 * tp / (gt_c + pred_c), np.nan)
        acc = np.where(gt_c > 0, tp / gt_c, np.nan)
    mean = lambda v: float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan")
    out = {"mIoU": mean(iou), "mDice": mean(dice), "pixel_acc": float(tp.sum() / cm.sum()) if cm.sum() else float("nan"), "mean_acc": mean(acc)}
    if n == 2:
        out["iou"] = 1.0 if np.isnan(iou[1]) else float(iou[1])
        out["dice"] = 1.0 if np.isnan(dice[1]) else float(dice[1])
        out["image_jaccard"] = float(np.mean(ious))
        out["image_dice"] = float(np.mean(dices))
        out["thresholded_jaccard"] = float(np.mean([j if j >= 0.65 else 0 for j in ious]))
    return out


def build_at(model, size, kb):
    """The same network with a different input size (a crop), weights copied."""
    import keras
    cfg = model.get_config()
    for layer in cfg["layers"]:
        if layer["class_name"] == "InputLayer":
            c = layer["config"]
            c["batch_shape"] = [None, size[0], size[1], c["batch_shape"][-1]]
    other = keras.Model.from_config(cfg)
    other.set_weights(model.get_weights())
    return other


def train(args, kb):
    strategy, worker, workers, chief, what = pick_strategy()
    print(what, flush=True)
    say = lambda msg: log(worker, workers, msg)
    meta = kb.read_meta(args.keras)
    kb.check_keras_out(args.out)
    rec = read_recipe(args.config, kb.read_bounded)
    given = args.given
    if args.loss:
        rec["loss"] = {**rec["loss"], "name": args.loss}
    batch = args.batch if ("--batch" in given or not args.config) else rec["batch_size"]
    base_lr = args.lr if ("--lr" in given or not args.config) else float(rec["optimizer"]["lr"])
    seed = args.seed if args.seed is not None else int(rec["seed"])
    augs = {} if args.no_augment else rec["augmentations"]
    if batch % strategy.num_replicas_in_sync:
        raise UserError(f"--batch {batch}: the global batch must divide into the {strategy.num_replicas_in_sync} replicas")
    files = kb.pairs(args.images, args.masks, args.mask_suffix)
    val_files = kb.pairs(args.val_images, args.val_masks or args.val_images, args.mask_suffix) if args.val_images else []
    read_mask = kb.mask_reader(meta, [m for _, m in files + val_files], args.rule, args.value_map, lambda m: say(m))
    data = Data(kb, meta, read_mask, augs, seed)
    val_data = Data(kb, meta, read_mask, {}, seed)

    pipelines = workers
    per_worker = batch // pipelines
    if per_worker == 0 or len(files) // pipelines < per_worker:
        raise UserError(f"{len(files)} training pairs over {pipelines} worker(s) do not fill a batch of {batch}")
    spe = (len(files) // pipelines) // per_worker
    total = args.steps if ("--steps" in given or not args.config) else (rec.get("iterations") or rec["epochs"] * spe)
    ckpt_every = args.ckpt_every or int(rec.get("save_every_iters") or 0) or spe
    val_interval = int(rec.get("val_interval", 1))
    threshold = meta["output"].get("threshold")  # the export's (training.threshold of its run)
    threshold = float(rec.get("threshold", 0.5) if threshold is None else threshold)

    with strategy.scope():
        model = kb.load_keras(args.keras)
        size = tuple(augs["crop"]["size"]) if augs.get("crop") else tuple(meta["input"]["size"])
        net = model if size == tuple(meta["input"]["size"]) else build_at(model, size, kb)
        tvars = [v.value for v in net.trainable_variables]
        names = [v.path for v in net.trainable_variables]
        opt = Optimizer(rec["optimizer"], tvars, names)
        if strategy.num_replicas_in_sync > 1:
            # Batch statistics over the global batch, as one device computes them (and the same
            # moving statistics on every worker): Keras's synchronized batch normalisation.
            for layer in net.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
        ckpt = tf.train.Checkpoint(model=net, slots=opt.checkpointables(), step=step_var)
    loss_fn = build_loss(rec["loss"], meta["num_classes"], meta["ignore_index"])
    clip = rec.get("grad_clip")

    ckpt_dir = args.ckpt_dir or args.out + ".ckpt"
    write_dir = ckpt_dir if chief else os.path.join(ckpt_dir, f"workertemp_{worker}")
    manager = tf.train.CheckpointManager(ckpt, write_dir, max_to_keep=3)
    latest = tf.train.latest_checkpoint(ckpt_dir)
    step = 0
    if latest:
        ckpt.restore(latest).expect_partial()
        step = int(step_var.numpy())
        say(f"resumed from {latest} at step {step}")
    if step > total:
        raise UserError(f"{ckpt_dir}: its checkpoint is at step {step}, past the {total} steps of this run")

    def replica_step(x, y, lr, t):
        with tf.GradientTape() as tape:
            local = loss_fn(net(x, training=True), y)
            scaled = local / strategy.num_replicas_in_sync  # summed over the replicas: the mean
        grads = tape.gradient(scaled, tvars)
        ctx = tf.distribute.get_replica_context()
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if clip:
            grads, _ = tf.clip_by_global_norm(grads, float(clip))
        ctx.merge_call(lambda s, g: opt.apply(s, g, lr, t), args=(grads,))
        return local

    @tf.function
    def train_step(x, y, lr, t):
        local = strategy.run(replica_step, args=(x, y, lr, t))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None), strategy.experimental_local_results(local)[0]

    losses, lrs, first = [], [], step
    say(f"{len(files)} training pairs, {spe} steps per epoch of global batch {batch} ({per_worker} per worker), {total} steps; "
        f"loss {rec['loss']['name']}, {rec['optimizer']['name']} lr {base_lr:g}, {rec['lr_schedule']['name']} schedule, "
        f"augmentations: {', '.join(augs) or 'none'}; checkpoints every {ckpt_every} steps in {ckpt_dir}")
    t0 = time.time()
    # One dataset for the rest of the run: each epoch's order (a permutation from the seed and the
    # epoch), this worker's share of it, less what the checkpoint's steps already used.
    def make(ctx):
        b = ctx.get_per_replica_batch_size(batch)
        local_replicas = (batch // b) // ctx.num_input_pipelines
        ims, ms, eps, pos = [], [], [], []
        for e in range(step // spe, (total - 1) // spe + 1):
            order = epoch_order(len(files), seed, e)[ctx.input_pipeline_id::ctx.num_input_pipelines][:spe * b * local_replicas]
            ims += [files[i][0] for i in order]
            ms += [files[i][1] for i in order]
            eps += [e] * len(order)
            pos += order.tolist()
        ds = tf.data.Dataset.from_tensor_slices((ims, ms, np.array(eps, np.int64), np.array(pos, np.int64)))
        ds = ds.map(data.load).batch(b, drop_remainder=True)
        ds = ds.skip((step % spe) * local_replicas).take((total - step) * local_replicas)
        o = tf.data.Options()
        o.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return ds.with_options(o)

    for x, y in strategy.distribute_datasets_from_function(make) if step < total else []:
        lr = lr_at(rec["lr_schedule"], base_lr, step, total, spe)
        loss, local = train_step(x, y, tf.constant(lr, tf.float32), tf.constant(step + 1, tf.int64))
        loss = float(loss)
        if not np.isfinite(loss):
            raise UserError(f"loss became {loss} at step {step + 1}; the last checkpoint is kept in {ckpt_dir}. Try a lower learning rate or set training.grad_clip")
        step += 1
        losses.append(loss)
        lrs.append(lr)
        if step % args.log_every == 0 or step == first + 1 or step == total:
            say(f"step {step}/{total} epoch {(step - 1) // spe + 1} loss {loss:.6f} (this worker's shard {float(local):.6f}) lr {lr:.8f} {time.time() - t0:.1f}s")
        if step % ckpt_every == 0 or step == total:
            step_var.assign(step)
            path = manager.save(checkpoint_number=step)
            if chief:
                say(f"checkpoint {path}")
        if val_files and step % spe == 0 and ((step // spe) % val_interval == 0 or step == total):
            if net is not model:
                model.set_weights(net.get_weights())
            m = metrics(model, val_files, val_data.load, meta, threshold)
            say(f"validation after epoch {step // spe}, step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in m.items()))
        if step >= total:
            break
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    if net is not model:
        model.set_weights(net.get_weights())
    checksum = lambda vs: float(sum(np.abs(v.numpy()).astype(np.float64).sum() for v in vs))
    out = args.out if chief else os.path.join(os.path.dirname(os.path.abspath(args.out)), f".worker{worker}-{os.getpid()}.tmp.keras")
    model.save(out)
    if chief:
        with open(out + ".meta.json", "w") as f:
            json.dump(meta, f)
    else:
        os.unlink(out)
    print(json.dumps({"steps": step - first, "first_step": first, "loss": losses, "lr": lrs, "worker": worker, "workers": workers, "chief": chief, "trainable_sum": checksum(model.trainable_weights), "weights_sum": checksum(model.weights), "seconds": round(time.time() - t0, 2)}), flush=True)
    return chief
