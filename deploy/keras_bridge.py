#!/usr/bin/env python3
"""A bridge between this project's exports (TF.js LayersModel: model.json + weight shards)
and Keras, for training past one machine with tf.distribute. Needs tensorflow-cpu (or
tensorflow) 2.x with Keras 3; tensorflowjs is not needed: the LayersModel JSON and its
shards are a documented format (tfjs-layers' Keras-style topology, little-endian float32).

  python3 deploy/keras_bridge.py to-keras EXPORT/model.json model.keras
  python3 deploy/keras_bridge.py train model.keras IMAGES_DIR MASKS_DIR trained.keras --steps 20 [--mask-suffix _segmentation]
  python3 deploy/keras_bridge.py from-keras trained.keras EXPORT/model.json BACK_DIR
  python3 deploy/keras_bridge.py inputs model.keras.meta.json x.npy IMAGE...   (what train feeds the network)

to-keras builds the same network in Keras with the export's weights; train fits it under
tf.distribute.MirroredStrategy (every local GPU, else the CPU) on image/mask pairs matched by
file stem, with the export's preprocessing; from-keras writes the Keras weights back into
the export's topology, a LayersModel that `npx train --weights` and `npx evaluate
--checkpoint` accept.
"""
import argparse, copy, json, os, sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
import keras


def read_export(model_json):
    with open(model_json) as f:
        m = json.load(f)
    folder = os.path.dirname(os.path.abspath(model_json))
    weights = {}
    for group in m["weightsManifest"]:
        data = b"".join(open(os.path.join(folder, p), "rb").read() for p in group["paths"])
        at = 0
        for w in group["weights"]:
            if w.get("quantization"):
                raise SystemExit(f"{model_json}: quantised weights ({w['quantization']['dtype']}); export without --quantize for Keras")
            if w["dtype"] != "float32":
                raise SystemExit(f"{model_json}: weight {w['name']} is {w['dtype']}; expected float32")
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            weights[w["name"]] = np.frombuffer(data, "<f4", n, at).reshape(w["shape"])
            at += 4 * n
    return m, weights


def keras_config(topology):
    """tfjs-layers' topology as Keras 3 reads it: the legacy functional format, minus what
    Keras 3 names differently (InputLayer's batch_shape)."""
    cfg = copy.deepcopy(topology)
    cfg["class_name"] = "Functional"
    for layer in cfg["config"]["layers"]:
        c = layer["config"]
        if layer["class_name"] == "InputLayer":
            c["batch_shape"] = c.pop("batch_input_shape")
            c.pop("sparse", None)
        for k in list(c):
            if k.endswith("_initializer") and isinstance(c[k], dict):
                c[k] = None  # weights are loaded next; tfjs's initializer names are not all Keras's
    return cfg


def weight_name(layer, variable):
    return f"{layer.name}/{variable.path.split('/')[-1]}"


def to_keras(model_json, out=None):
    m, weights = read_export(model_json)
    cfg = keras_config(m["modelTopology"])
    for layer in cfg["config"]["layers"]:
        for k in [k for k, v in layer["config"].items() if k.endswith("_initializer") and v is None]:
            del layer["config"][k]
    model = keras.Model.from_config(cfg["config"])
    missing = []
    for layer in model.layers:
        values = []
        for v in layer.weights:
            name = weight_name(layer, v)
            if name not in weights:
                missing.append(name)
                continue
            values.append(weights[name])
        if layer.weights and not missing:
            layer.set_weights(values)
    if missing:
        raise SystemExit(f"{model_json}: no weights for {', '.join(missing[:3])}")
    model._semseg_metadata = m.get("userDefinedMetadata", {})
    if out:
        model.save(out)
        with open(out + ".meta.json", "w") as f:
            json.dump(m.get("userDefinedMetadata", {}), f)
    return model


def pairs(images_dir, masks_dir, suffix):
    out = []
    for name in sorted(os.listdir(images_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        mask = os.path.join(masks_dir, stem + suffix + ".png")
        if os.path.exists(mask):
            out.append((os.path.join(images_dir, name), mask))
    if not out:
        raise SystemExit(f"no image/mask pairs in {images_dir} and {masks_dir} (mask name: <stem>{suffix}.png)")
    return out


def preprocess(meta):
    """image file -> network input, as the export's metadata says (input.normalize)."""
    h, w = meta["input"]["size"]
    mean = tf.constant(meta["input"]["mean"], tf.float32)
    std = tf.constant(meta["input"]["std"], tf.float32)
    per_image = meta["input"].get("normalize") == "image"

    def load(image):
        x = tf.image.resize(tf.cast(tf.io.decode_image(tf.io.read_file(image), 3, expand_animations=False), tf.float32), (h, w))
        if per_image:
            # The image's own mean and deviation over all values, in 0..255 (at least 1).
            m, v = tf.nn.moments(x, axes=[0, 1, 2])
            return (x - m) / tf.maximum(tf.sqrt(v), 1.0)
        return (x / 255.0 - mean) / std

    return load


def dataset(meta, files, batch):
    h, w = meta["input"]["size"]
    binary = meta["output"]["activation"] == "sigmoid"
    image_input = preprocess(meta)

    def load(image, mask):
        y = tf.image.resize(tf.io.decode_png(tf.io.read_file(mask), 1), (h, w), method="nearest")
        y = tf.cast(y > 127, tf.float32) if binary else tf.cast(y[..., 0], tf.int32)
        return image_input(image), y

    images, masks = zip(*files)
    return tf.data.Dataset.from_tensor_slices((list(images), list(masks))).map(load).shuffle(len(files), seed=0).repeat().batch(batch)


def train(keras_path, images_dir, masks_dir, out, steps, batch, lr, suffix):
    with open(keras_path + ".meta.json") as f:
        meta = json.load(f)
    strategy = tf.distribute.MirroredStrategy()
    print(f"MirroredStrategy over {strategy.num_replicas_in_sync} device(s)")
    with strategy.scope():
        model = keras.models.load_model(keras_path)
        binary = meta["output"]["activation"] == "sigmoid"
        loss = keras.losses.BinaryCrossentropy(from_logits=True) if binary else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss)
    hist = model.fit(dataset(meta, pairs(images_dir, masks_dir, suffix), batch), steps_per_epoch=steps, epochs=1, verbose=0)
    print(json.dumps({"steps": steps, "loss": [float(v) for v in hist.history["loss"]]}))
    model.save(out)
    with open(out + ".meta.json", "w") as f:
        json.dump(meta, f)
    return model


def from_keras(keras_path, template_json, out_dir):
    model = keras.models.load_model(keras_path)
    with open(template_json) as f:
        m = json.load(f)
    by_name = {weight_name(layer, v): v.numpy() for layer in model.layers for v in layer.weights}
    specs, chunks = [], []
    for group in m["weightsManifest"]:
        for w in group["weights"]:
            if w["name"] not in by_name:
                raise SystemExit(f"{keras_path}: no weight {w['name']} (the Keras model is not the export's network)")
            v = np.asarray(by_name[w["name"]], "<f4")
            if list(v.shape) != list(w["shape"]):
                raise SystemExit(f"{keras_path}: weight {w['name']} has shape {list(v.shape)}, the export {w['shape']}")
            specs.append({"name": w["name"], "shape": w["shape"], "dtype": "float32"})
            chunks.append(v.tobytes())
    os.makedirs(out_dir, exist_ok=True)
    shard = "group1-shard1of1.bin"
    with open(os.path.join(out_dir, shard), "wb") as f:
        f.write(b"".join(chunks))
    out = dict(m)
    out["weightsManifest"] = [{"paths": [shard], "weights": specs}]
    out["convertedBy"] = f"deploy/keras_bridge.py from-keras (keras {keras.__version__})"
    # The export's metadata says how to preprocess; its checkpoint facts are the Keras run's now.
    meta = dict(out.get("userDefinedMetadata", {}))
    if "checkpoint" in meta:
        meta["checkpoint"] = {**meta["checkpoint"], "source": os.path.abspath(keras_path), "epoch": None, "step": None, "best_metric": None}
    out["userDefinedMetadata"] = meta
    with open(os.path.join(out_dir, "model.json"), "w") as f:
        json.dump(out, f)
    return os.path.join(out_dir, "model.json")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("to-keras"); a.add_argument("model_json"); a.add_argument("out")
    t = sub.add_parser("train"); t.add_argument("keras"); t.add_argument("images"); t.add_argument("masks"); t.add_argument("out")
    t.add_argument("--steps", type=int, default=20); t.add_argument("--batch", type=int, default=8); t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--mask-suffix", default="")
    b = sub.add_parser("from-keras"); b.add_argument("keras"); b.add_argument("template_json"); b.add_argument("out_dir")
    x = sub.add_parser("predict", help="logits of the Keras model for inputs in a .npy file (tests)"); x.add_argument("keras"); x.add_argument("inputs"); x.add_argument("out")
    i = sub.add_parser("inputs", help="the network inputs train feeds for these images, to a .npy file (tests)"); i.add_argument("meta_json"); i.add_argument("out"); i.add_argument("images", nargs="+")
    args = p.parse_args()
    if args.cmd == "to-keras":
        to_keras(args.model_json, args.out)
        print(f"wrote {args.out}")
    elif args.cmd == "train":
        train(args.keras, args.images, args.masks, args.out, args.steps, args.batch, args.lr, args.mask_suffix)
        print(f"wrote {args.out}")
    elif args.cmd == "from-keras":
        print(f"wrote {from_keras(args.keras, args.template_json, args.out_dir)}")
    elif args.cmd == "predict":
        model = keras.models.load_model(args.keras)
        np.save(args.out, model.predict(np.load(args.inputs), verbose=0))
    elif args.cmd == "inputs":
        with open(args.meta_json) as f:
            load = preprocess(json.load(f))
        np.save(args.out, np.stack([load(f).numpy() for f in args.images]).astype("<f4"))


if __name__ == "__main__":
    main()
