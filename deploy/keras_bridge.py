#!/usr/bin/env python3
"""A bridge between this project's exports (TF.js LayersModel: model.json + weight shards)
and Keras, for training past one machine with tf.distribute. Needs tensorflow-cpu (or
tensorflow) 2.x with Keras 3; tensorflowjs is not needed: the LayersModel JSON and its
shards are a documented format (tfjs-layers' Keras-style topology, little-endian float32).

  python3 deploy/keras_bridge.py to-keras EXPORT/model.json model.keras
  python3 deploy/keras_bridge.py train model.keras IMAGES_DIR MASKS_DIR trained.keras [--config RUN/config.yaml] [--steps 20] [--val-images DIR --val-masks DIR] [--mask-suffix _segmentation] [--masks auto|ids|threshold] [--value-map '{"255": 1}']
  python3 deploy/keras_bridge.py from-keras trained.keras EXPORT/model.json BACK_DIR
  python3 deploy/keras_bridge.py inputs model.keras.meta.json x.npy IMAGE...   (what train feeds the network)
  python3 deploy/keras_bridge.py targets model.keras.meta.json y.npy MASK...   (the class ids train fits to)

to-keras builds the same network in Keras with the export's weights; train fits it with the
run's recipe (its config.yaml: loss, optimizer, schedule, augmentations) in a custom training
loop under tf.distribute (MultiWorkerMirroredStrategy when TF_CONFIG is set, else
MirroredStrategy over every local GPU, else the CPU) on image/mask pairs matched by file stem,
with the export's preprocessing (train --help says more); from-keras writes the Keras weights back into
the export's topology, a LayersModel that `npx train --weights` and `npx evaluate
--checkpoint` accept, into a new (or empty) folder.

Masks are read as the project's loaders read them: the stored value (grey level or palette
index) through a value -> class table, then resized by nearest neighbour at pixel centres.
--masks ids: values are class ids 0..num_classes-1 or the export's ignore_index (the folder
loader; --value-map as its data.value_map); threshold: values >= 128 are class 1 (the isic
loader, binary exports only); auto (default): ids for multi-class exports; for binary ones
ids when the masks hold only 0, 1 and the ignore index with some 1, else threshold. Any
other value is an error naming the mask. Ignored pixels count in no loss.
"""
import argparse, copy, errno, hashlib, json, os, stat, struct, sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# numpy, tensorflow and keras are imported by load_libraries(), after the command line is
# parsed: --help and a usage error answer at once, without TensorFlow's start-up (seconds).
np = tf = keras = None


def load_libraries():
    global np, tf, keras
    import numpy as np
    import tensorflow as tf
    import keras


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from keras_recipe.errors import UserError  # noqa: E402  (the package beside this file; no TensorFlow)


# Bounds on what is read, as storage/model_files.ts sets them.
MODEL_JSON_MAX_BYTES = 64 * 1024 * 1024
WEIGHTS_MAX_BYTES = 2 * 1024 * 1024 * 1024
MASK_MAX_BYTES = 256 * 1024 * 1024


def open_regular(path, what=None):
    """An fd on a regular file, checked with fstat on the fd itself (not stat on the name).
    O_NONBLOCK keeps the open of a FIFO from waiting for a writer."""
    what = what or path
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UserError(f"{what}: not found")
    except IsADirectoryError:
        raise UserError(f"{what}: is a folder, not a file")
    except OSError as e:
        raise UserError(f"{what}: cannot read ({e.strerror})")
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return fd, st.st_size
    os.close(fd)
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what}: is a folder, not a file")
    raise UserError(f"{what}: not a regular file (a device, FIFO or socket); refused")


def read_bounded(path, limit, what=None):
    """A regular file of at most `limit` bytes, read through one fd and never past limit + 1
    bytes (a device such as /dev/zero stats as 0 bytes; a file may grow meanwhile)."""
    what = what or path
    fd, size = open_regular(path, what)
    try:
        if size > limit:
            raise UserError(f"{what}: {size} bytes, more than the {limit}-byte limit")
        parts, got = [], 0
        while True:
            b = os.read(fd, min(size + 1 - got, 1 << 24) or 1)
            if not b:
                break
            parts.append(b)
            got += len(b)
            if got > size:
                raise UserError(f"{what}: grew past its {size} bytes while being read; refused")
        return b"".join(parts)
    except OSError as e:
        raise UserError(f"{what}: cannot read ({e.strerror})")
    finally:
        os.close(fd)


def read_json(path, what, limit=MODEL_JSON_MAX_BYTES):
    data = read_bounded(path, limit)
    try:
        return json.loads(data.decode("utf8"))
    except (UnicodeDecodeError, ValueError):
        raise UserError(f"{path}: not valid JSON; expected {what}")


def read_model_json(model_json):
    m = read_json(model_json, "a TF.js model.json")
    if not isinstance(m, dict) or not isinstance(m.get("modelTopology"), dict) or not isinstance(m.get("weightsManifest"), list):
        raise UserError(f"{model_json}: not a TF.js LayersModel model.json (needs modelTopology and weightsManifest)")
    for g in m["weightsManifest"]:
        if not isinstance(g, dict) or not isinstance(g.get("paths"), list) or not isinstance(g.get("weights"), list):
            raise UserError(f"{model_json}: weightsManifest groups need paths and weights lists")
    return m


def shard_file(folder, p, model_json):
    """A listed shard, confined to the model's folder: a relative name without '..' whose real
    path (symlinks resolved) is inside the folder's real path."""
    def bad(why):
        return UserError(f"{model_json}: weight shard {json.dumps(p)} {why}; shards must be files inside the model's folder")
    if not isinstance(p, str) or not p or "\0" in p:
        raise bad("is not a file name")
    if os.path.isabs(p) or p.startswith("\\") or (len(p) > 1 and p[1] == ":"):
        raise bad("is an absolute path")
    if ".." in p.replace("\\", "/").split("/"):
        raise bad("climbs out with '..'")
    file = os.path.join(folder, p)
    if not os.path.lexists(file):
        raise UserError(f"{file}: weight shard listed in {model_json} is missing")
    real, real_dir = os.path.realpath(file), os.path.realpath(folder)
    if not real.startswith(real_dir + os.sep):
        raise bad(f"resolves to {real}, outside {real_dir} (a symlink?)")
    return file


def weight_count(w, model_json):
    shape = w.get("shape") if isinstance(w, dict) else None
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise UserError(f"{model_json}: weight {json.dumps(w.get('name') if isinstance(w, dict) else w)} has no valid shape ({json.dumps(shape)})")
    return int(np.prod(shape, dtype=object)) if shape else 1


def read_export(model_json):
    m = read_model_json(model_json)
    folder = os.path.dirname(os.path.abspath(model_json))
    weights = {}
    groups = []
    for group in m["weightsManifest"]:
        for w in group["weights"]:
            if w.get("quantization"):
                raise UserError(f"{model_json}: quantised weights ({w['quantization'].get('dtype')}); export without --quantize for Keras")
            if w.get("dtype") != "float32":
                raise UserError(f"{model_json}: weight {w.get('name')} is {w.get('dtype')}; expected float32")
        groups.append(4 * sum(weight_count(w, model_json) for w in group["weights"]))
    # What the shards must hold, from dtypes and shapes, bounded before a byte is read.
    if sum(groups) > WEIGHTS_MAX_BYTES:
        raise UserError(f"{model_json}: its manifest needs {sum(groups)} bytes of weights, more than the {WEIGHTS_MAX_BYTES}-byte limit")
    for group, need in zip(m["weightsManifest"], groups):
        parts, have = [], 0
        for p in group["paths"]:
            file = shard_file(folder, p, model_json)
            # No shard is read past what its group still needs.
            b = read_bounded(file, need - have, f"{file} (weight shard of {model_json})")
            parts.append(b)
            have += len(b)
        if have != need:
            raise UserError(f"{model_json}: its weight shards {', '.join(map(str, group['paths']))} hold {have} bytes but the manifest needs {need} (a shard truncated or replaced?)")
        data = b"".join(parts)
        at = 0
        for w in group["weights"]:
            n = weight_count(w, model_json)
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


def check_keras_out(out):
    if not out.endswith(".keras"):
        raise UserError(f"{out}: a Keras model file name must end in .keras")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UserError(f"{out}: its folder {parent} does not exist")
    if os.path.isdir(out):
        raise UserError(f"{out}: is a folder; expected a .keras file name")


def load_keras(path):
    os.close(open_regular(path)[0])  # not found / a folder / not a regular file: one line
    try:
        return keras.models.load_model(path, compile=False)  # train compiles its own loss; the saved one is a local function
    except Exception as e:  # Keras raises ValueError, zipfile errors, OSError...: all mean "not a model"
        raise UserError(f"{path}: not a Keras model file ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})")


def read_meta(keras_path):
    """The export's metadata that to-keras wrote beside the .keras file."""
    meta_json = keras_path + ".meta.json"
    if not os.path.lexists(meta_json):
        raise UserError(f"{meta_json}: not found; to-keras writes it beside {keras_path} (the export's userDefinedMetadata)")
    return check_meta(read_json(meta_json, "the export's metadata"), meta_json)


def check_meta(meta, where):
    try:
        h, w = meta["input"]["size"]
        assert all(isinstance(v, int) and v > 0 for v in (h, w))
        assert meta["output"]["activation"] in ("sigmoid", "softmax")
        assert isinstance(meta["num_classes"], int) and meta["num_classes"] >= 2
        assert isinstance(meta["ignore_index"], int) and 0 <= meta["ignore_index"] <= 255
    except (KeyError, TypeError, ValueError, AssertionError):
        raise UserError(f"{where}: not an export's metadata (needs input.size, output.activation, num_classes, ignore_index)")
    return meta


def to_keras(model_json, out=None):
    if out:
        check_keras_out(out)  # before the work, not after it
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
        raise UserError(f"{model_json}: no weights for {', '.join(missing[:3])}")
    model._semseg_metadata = m.get("userDefinedMetadata", {})
    if out:
        model.save(out)
        with open(out + ".meta.json", "w") as f:
            json.dump(m.get("userDefinedMetadata", {}), f)
    return model


def pairs(images_dir, masks_dir, suffix):
    for d, what in ((images_dir, "images"), (masks_dir, "masks")):
        if not os.path.exists(d):
            raise UserError(f"{d}: not found; expected the {what} folder")
        if not os.path.isdir(d):
            raise UserError(f"{d}: not a folder; expected the {what} folder")
    out = []
    for name in sorted(os.listdir(images_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        mask = os.path.join(masks_dir, stem + suffix + ".png")
        if os.path.exists(mask):
            out.append((os.path.join(images_dir, name), mask))
    if not out:
        raise UserError(f"no image/mask pairs in {images_dir} and {masks_dir} (mask name: <stem>{suffix}.png)")
    return out


def load_image(meta):
    """image file -> RGB 0..255 at the export's input size (before any augmentation)."""
    h, w = meta["input"]["size"]
    return lambda image: tf.image.resize(tf.cast(tf.io.decode_image(tf.io.read_file(image), 3, expand_animations=False), tf.float32), (h, w))


def normalizer(meta):
    """RGB 0..255 -> network input, as the export's metadata says (input.normalize)."""
    mean = tf.constant(meta["input"]["mean"], tf.float32)
    std = tf.constant(meta["input"]["std"], tf.float32)
    per_image = meta["input"].get("normalize") == "image"

    def norm(x):
        if per_image:
            # The image's own mean and deviation over all values, in 0..255 (at least 1).
            m, v = tf.nn.moments(x, axes=[0, 1, 2])
            return (x - m) / tf.maximum(tf.sqrt(v), 1.0)
        return (x / 255.0 - mean) / std

    return norm


def preprocess(meta):
    """image file -> network input, as the export's metadata says (input.normalize)."""
    load, norm = load_image(meta), normalizer(meta)
    return lambda image: norm(load(image))


# --- masks, as pipeline/png.ts and pipeline/decode.ts read them --------------------------

def png_chunks(buf, file):
    if buf[:8] != b"\x89PNG\r\n\x1a\n" or buf[12:16] != b"IHDR":
        raise UserError(f"{file}: not a readable PNG file")
    chunks, off = {}, 8
    while off + 12 <= len(buf):
        n = struct.unpack(">I", buf[off:off + 4])[0]
        kind = buf[off + 4:off + 8]
        if off + 12 + n > len(buf):
            break
        chunks.setdefault(kind, buf[off + 8:off + 8 + n])
        if kind == b"IEND":
            return chunks
        off += 12 + n
    raise UserError(f"{file}: truncated or corrupt PNG (no complete image data)")


def read_mask_values(file):
    """The stored value of each pixel (grey level or palette index, 8 or 16 bit), H x W."""
    buf = read_bounded(file, MASK_MAX_BYTES)
    chunks = png_chunks(buf, file)
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][:13])
    if ctype in (2, 6):
        raise UserError(f"{file}: mask is an RGB(A) colour image; expected single-channel class ids (greyscale or palette PNG)")
    if ctype not in (0, 3, 4):
        raise UserError(f"{file}: unsupported PNG colour type {ctype}")
    if interlace and depth < 8:
        raise UserError(f"{file}: interlaced PNG masks below 8 bits per pixel are not supported; re-save it without interlacing")
    try:
        if ctype == 3:
            rgba = tf.io.decode_png(buf, 4).numpy()
        else:
            img = tf.io.decode_png(buf, 0, dtype=tf.uint16 if depth == 16 else tf.uint8).numpy()
    except tf.errors.OpError as e:
        raise UserError(f"{file}: truncated or corrupt PNG ({e.message.splitlines()[0][:120]})")
    if ctype == 3:
        # TensorFlow gives the palette's colours; the class id is the index, so map back.
        pal = np.frombuffer(chunks.get(b"PLTE", b""), np.uint8).reshape(-1, 3)
        alpha = np.full(len(pal), 255, np.uint8)
        trns = np.frombuffer(chunks.get(b"tRNS", b""), np.uint8)[:len(pal)]
        alpha[:len(trns)] = trns
        key = lambda a: (a[..., 0].astype(np.uint32) << 24) | (a[..., 1].astype(np.uint32) << 16) | (a[..., 2].astype(np.uint32) << 8) | a[..., 3]
        keys = key(np.concatenate([pal, alpha[:, None]], 1))
        got = key(rgba)
        used = np.unique(got)
        index = {}
        for i, k in enumerate(keys.tolist()):
            index.setdefault(k, []).append(i)
        if any(len(index.get(k, [])) != 1 for k in used.tolist()):
            raise UserError(f"{file}: palette PNG with repeated (or missing) colours; the bridge reads palette indices through their colours: re-save it as 8-bit greyscale")
        lut = np.zeros(len(used), np.uint8)
        for j, k in enumerate(used.tolist()):
            lut[j] = index[k][0]
        return lut[np.searchsorted(used, got)]
    values = img[..., 0]
    if depth < 8:
        values = values // (255 // ((1 << depth) - 1))  # libpng scales 1/2/4-bit grey to 0..255; the stored value is the id
    return values


def mask_rules(meta, rule, value_map):
    """The value -> class table (-1: not a known value) of one of the loaders' rules."""
    n, ignore = meta["num_classes"], meta["ignore_index"]
    if rule == "threshold":
        if n != 2:
            raise UserError(f"--masks threshold is for binary exports; this one has {n} classes")
        if value_map:
            raise UserError("--value-map goes with --masks ids (the folder loader's data.value_map), not threshold")
        return np.where(np.arange(256) >= 128, 1, 0).astype(np.int16), ignore
    lut = np.full(256, -1, np.int16)
    lut[:min(n, 256)] = np.arange(min(n, 256))
    lut[ignore] = ignore
    for k, c in (value_map or {}).items():
        if not (str(k).isdigit() and 0 <= int(k) <= 255):
            raise UserError(f"--value-map: key '{k}' is not a mask value 0-255")
        if not isinstance(c, int) or isinstance(c, bool) or ((c < 0 or c >= n) and c != ignore):
            raise UserError(f"--value-map: {k} -> {c} is not a class 0-{n - 1} or the ignore index {ignore}")
        lut[int(k)] = c
    return lut, ignore


def check_values(values, lut, n, ignore, file):
    """As checkMaskValues: names the mask and the first value that is not a class."""
    for v in np.unique(values).tolist():
        c = int(lut[v]) if v < 256 else -1
        if c >= 0 and (c < n or c == ignore):
            continue
        why = "is not a known class value" if c < 0 else f"maps to class {c} but num_classes is {n}"
        i = int(np.flatnonzero(values.ravel() == v)[0])
        raise UserError(f"{file}: mask value {v} (first bad pixel #{i}) {why} (ignore index is {ignore})")


def resize_nearest(values, h, w):
    """Nearest neighbour at pixel centres, as resizeNearest in pipeline/decode.ts."""
    sh, sw = values.shape
    if (sh, sw) == (h, w):
        return values
    ys = np.minimum(sh - 1, ((2 * np.arange(h) + 1) * sh) // (2 * h))
    xs = np.minimum(sw - 1, ((2 * np.arange(w) + 1) * sw) // (2 * w))
    return values[ys[:, None], xs[None, :]]


def mask_reader(meta, masks, rule="auto", value_map=None, say=None):
    """Checks every mask as the loaders do and returns file -> H x W class ids (ignore_index
    where ignored), at the export's input size."""
    n, ignore = meta["num_classes"], meta["ignore_index"]
    seen = {}
    for f in masks:
        seen[f] = set(np.unique(read_mask_values(f)).tolist())
    if rule == "auto":
        allv = set().union(*seen.values()) if seen else set()
        # A binary set of 0/1 ids (the folder loader) or of 0/255 and in-between values (isic).
        rule = "ids" if n != 2 or value_map or (allv <= {0, 1, ignore} and 1 in allv) else "threshold"
    if rule not in ("ids", "threshold"):
        raise ValueError(f"mask rule {rule!r}")  # a bug, not an input: argparse checks --masks
    lut, ignore = mask_rules(meta, rule, value_map)
    for f in masks:
        bad = [v for v in sorted(seen[f]) if not (v < 256 and (0 <= lut[v] < n or lut[v] == ignore))]
        if bad:
            check_values(read_mask_values(f), lut, n, ignore, f)
    if say:
        say("masks: " + ("values >= 128 are class 1, below are class 0 (as the isic loader)" if rule == "threshold"
                         else f"values are class ids 0-{n - 1}, {ignore} is ignored" + (f", value map {json.dumps(value_map)}" if value_map else "") + " (as the folder loader)"))
    h, w = meta["input"]["size"]
    return lambda f: lut[resize_nearest(read_mask_values(f), h, w)].astype(np.int32)


def write_durable(file, data):
    with open(file, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def from_keras(keras_path, template_json, out_dir):
    # The output folder is new or empty: an export (or anything else) there is never overwritten.
    out_dir = out_dir.rstrip("/\\") or out_dir
    if os.path.lexists(out_dir):
        if not os.path.isdir(out_dir):
            raise UserError(f"{out_dir}: exists and is not a folder; give a new folder for the model")
        if os.listdir(out_dir):
            raise UserError(f"{out_dir}: not empty; give a new (or empty) folder, from-keras does not overwrite files")
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise UserError(f"{out_dir}: its folder {parent} does not exist")
    m = read_model_json(template_json)
    model = load_keras(keras_path)
    by_name = {weight_name(layer, v): v.numpy() for layer in model.layers for v in layer.weights}
    specs, chunks = [], []
    for group in m["weightsManifest"]:
        for w in group["weights"]:
            if w.get("name") not in by_name:
                raise UserError(f"{keras_path}: no weight {w.get('name')} (the Keras model is not the export's network)")
            v = np.asarray(by_name[w["name"]], "<f4")
            if list(v.shape) != list(w["shape"]):
                raise UserError(f"{keras_path}: weight {w['name']} has shape {list(v.shape)}, the export {w['shape']}")
            specs.append({"name": w["name"], "shape": w["shape"], "dtype": "float32"})
            chunks.append(v.tobytes())
    shard = "group1-shard1of1.bin"
    out = {k: v for k, v in m.items()}
    out["weightsManifest"] = [{"paths": [shard], "weights": specs}]
    out["convertedBy"] = f"deploy/keras_bridge.py from-keras (keras {keras.__version__})"
    # The export's metadata says how to preprocess; its checkpoint facts are the Keras run's now.
    meta = dict(out.get("userDefinedMetadata", {}))
    if "checkpoint" in meta:
        meta["checkpoint"] = {**meta["checkpoint"], "source": os.path.abspath(keras_path), "epoch": None, "step": None, "best_metric": None}
    out["userDefinedMetadata"] = meta
    files = {shard: b"".join(chunks), "model.json": json.dumps(out).encode()}
    # Written whole into a hidden sibling, then renamed into place (rename(2) takes an empty
    # folder's place): a reader never sees half a model. complete.json (the project's marker,
    # storage/atomic_dir.ts) lists these files' sizes and sha256, written last.
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(out_dir))}.tmp-{os.getpid()}-0")
    os.mkdir(tmp)
    try:
        for name, data in files.items():
            write_durable(os.path.join(tmp, name), data)
        marker = {"version": 1, "files": {n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()}}
        write_durable(os.path.join(tmp, "complete.json"), json.dumps(marker, indent=1).encode())
        fsync_dir(tmp)
        try:
            os.rename(tmp, out_dir)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise UserError(f"{out_dir}: was filled while the model was written; give a new (or empty) folder")
            raise
        fsync_dir(parent)
    except BaseException:
        if os.path.isdir(tmp):
            for name in os.listdir(tmp):  # only our own temporary folder's files
                os.unlink(os.path.join(tmp, name))
            os.rmdir(tmp)
        raise
    return os.path.join(out_dir, "model.json")


def run(args):
    if args.cmd == "to-keras":
        to_keras(args.model_json, args.out)
        print(f"wrote {args.out}")
    elif args.cmd == "train":
        value_map = None
        if args.value_map is not None:
            try:
                value_map = json.loads(args.value_map)
                assert isinstance(value_map, dict)
            except (ValueError, AssertionError):
                raise UserError(f"--value-map {args.value_map}: expected a JSON object such as '{{\"255\": 1}}'")
        args.value_map = value_map
        from keras_recipe import train_loop
        import types
        bridge = types.SimpleNamespace(**globals())  # this file's functions (also when loaded by path, not as a module)
        if train_loop.train(args, bridge):  # the chief; the other workers write no model
            print(f"wrote {args.out}")
    elif args.cmd == "from-keras":
        print(f"wrote {from_keras(args.keras, args.template_json, args.out_dir)}")
    elif args.cmd == "predict":
        model = load_keras(args.keras)
        np.save(args.out, model.predict(np.load(args.inputs), verbose=0))
    elif args.cmd == "inputs":
        load = preprocess(check_meta(read_json(args.meta_json, "the export's metadata"), args.meta_json))
        np.save(args.out, np.stack([load(f).numpy() for f in args.images]).astype("<f4"))
    elif args.cmd == "targets":
        meta = check_meta(read_json(args.meta_json, "the export's metadata"), args.meta_json)
        read = mask_reader(meta, args.masks, args.rule)
        np.save(args.out, np.stack([read(f) for f in args.masks]).astype("<i4"))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default in its help line, except None and off switches (their help says what
    happens then); the description and epilog as written."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False) else super()._get_help_string(action)


TRAIN_HELP = """Trains the network with the project's recipe (read from the run's config.yaml with
--config): its loss, optimizer with the learning-rate schedule and warm-up, paired augmentations,
validation each epoch and checkpoints from which a stopped job resumes. One custom training loop
under tf.distribute: MultiWorkerMirroredStrategy when TF_CONFIG is set, else MirroredStrategy
over the local GPUs (or the CPU). Every worker logs its progress to stderr; the chief writes OUT."""
TRAIN_EPILOG = """several machines: run the same command on each, with its own TF_CONFIG, e.g.
  TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
(index 1 on host2); --ckpt-dir must be a folder every worker reads (shared storage)."""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    d = HelpFormatter  # each option's default in its help line
    a = sub.add_parser("to-keras", help="an export as a Keras model (.keras) with its weights", formatter_class=d)
    a.add_argument("model_json", help="the export's model.json (npx export-model)"); a.add_argument("out", help="the .keras file to write")
    t = sub.add_parser("train", help="train a .keras model with the run's recipe under tf.distribute (TF_CONFIG: several workers)", formatter_class=d,
                       description=TRAIN_HELP, epilog=TRAIN_EPILOG, allow_abbrev=False)  # options given are told apart by name
    t.add_argument("keras", help="the .keras model (to-keras)"); t.add_argument("images", help="folder of training images"); t.add_argument("masks", help="folder of training masks, matched to images by file stem"); t.add_argument("out", help="the trained .keras file to write (by the chief only)")
    t.add_argument("--config", metavar="CONFIG_YAML", help="the run's config.yaml (<results.root>/<name>/config.yaml): loss, optimizer, schedule, augmentations, batch size, steps, seed from its training: section; without it the project's defaults (bce+dice, adam, poly) and no augmentation")
    t.add_argument("--steps", type=int, default=20, help="optimizer steps in all (the schedule's length); given a config, and unless set here: its training.iterations, else epochs x steps per epoch")
    t.add_argument("--batch", type=int, default=8, help="global batch size (split over the workers and devices); given a config, and unless set here: its training.batch_size")
    t.add_argument("--lr", type=float, default=1e-3, help="base learning rate; given a config, and unless set here: its training.optimizer.lr")
    t.add_argument("--loss", help="training.loss.name instead of the config's, e.g. ce or bce+dice (bce, ce, dice joined by +)")
    t.add_argument("--seed", type=int, help="seed of the epochs' order and the augmentations (default: training.seed, 42)")
    t.add_argument("--no-augment", action="store_true", help="train without the config's augmentations")
    t.add_argument("--val-images", help="folder of validation images: Dice/mIoU after each epoch (training.val_interval)")
    t.add_argument("--val-masks", help="folder of validation masks (default: --val-images)")
    t.add_argument("--ckpt-dir", help="checkpoint folder, shared by the workers; a job started again resumes from its last checkpoint (default: OUT.ckpt)")
    t.add_argument("--ckpt-every", type=int, default=0, help="steps between checkpoints (0: checkpoint.save_every_iters of the config if set, else every epoch)")
    t.add_argument("--log-every", type=int, default=10, help="steps between progress lines (step, loss, lr) on stderr, from every worker")
    t.add_argument("--mask-suffix", default="", help="a mask's file stem is the image's plus this, e.g. _segmentation")
    t.add_argument("--masks", dest="rule", choices=["auto", "ids", "threshold"], default="auto", help="how mask values become classes (see above)")
    t.add_argument("--value-map", help='JSON object mask value -> class, as data.value_map (e.g. \'{"255": 1}\')')
    b = sub.add_parser("from-keras", help="a .keras model's weights back into an export's topology", formatter_class=d)
    b.add_argument("keras", help="the trained .keras file"); b.add_argument("template_json", help="the model.json it came from (to-keras)"); b.add_argument("out_dir", help="a new or empty folder for model.json and its shards")
    x = sub.add_parser("predict", help="logits of the Keras model for inputs in a .npy file (tests)", formatter_class=d)
    x.add_argument("keras", help="the .keras model"); x.add_argument("inputs", help=".npy of network inputs [n,h,w,c]"); x.add_argument("out", help=".npy of logits to write")
    i = sub.add_parser("inputs", help="the network inputs train feeds for these images, to a .npy file (tests)", formatter_class=d)
    i.add_argument("meta_json", help="the .keras.meta.json to-keras wrote"); i.add_argument("out", help=".npy to write"); i.add_argument("images", nargs="+", help="image files")
    g = sub.add_parser("targets", help="the class ids train fits to for these masks, to a .npy file (tests)", formatter_class=d)
    g.add_argument("meta_json", help="the .keras.meta.json to-keras wrote"); g.add_argument("out", help=".npy to write"); g.add_argument("masks", nargs="+", help="mask files")
    g.add_argument("--masks", dest="rule", choices=["auto", "ids", "threshold"], default="auto", help="how mask values become classes (see above)")
    args = p.parse_args(argv)
    # Options given on the command line (with --config, they win over the config's values).
    args.given = {a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv) if a.startswith("--")}
    load_libraries()
    try:
        run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        # A full disk, a read-only or missing folder on write: the user's to fix, so one line.
        # Anything else (a bug) keeps its traceback.
        if e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
