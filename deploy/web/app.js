// The deploy page: loads model.json with the tfjs browser bundle and segments the image a
// person picks or drops, entirely in this page. Plain script on the global `tf`, so the
// folder needs no build step. Preprocessing follows the model's userDefinedMetadata,
// as the project's predict command does it (engine/predictor.ts predictMask). Ops are
// called as tf.op(x), not x.op(): the page loads tfjs's core, layers and backend bundles,
// which leave the chained forms to the umbrella bundle it does not ship.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  // Read by tests and by anyone scripting the page.
  const api = (window.semseg = { ready: false, backend: null, meta: null, result: null, error: null });
  let model = null;
  let meta = null;
  let last = null; // { width, height, prob (binary) | classes (multi-class), ms }

  function setStatus(text, isError) {
    $('status').textContent = text;
    $('status').className = isError ? 'error' : '';
  }

  // Fastest first; the first that starts and computes is used. ?backend=NAME forces one.
  async function pickBackend() {
    const order = params.get('backend') ? [params.get('backend')] : ['webgpu', 'webgl', 'wasm', 'cpu'];
    for (const name of order) {
      if (!tf.findBackendFactory(name)) continue;
      // Without an adapter tfjs's webgpu factory throws a TypeError into the console: ask first.
      if (name === 'webgpu' && !(navigator.gpu && (await navigator.gpu.requestAdapter().catch(() => null)))) continue;
      try {
        if (name === 'wasm') tf.wasm.setWasmPaths(new URL('./', location.href).href);
        if (!(await tf.setBackend(name))) continue;
        await tf.ready();
        tf.tidy(() => tf.add(tf.scalar(1), tf.scalar(1)).dataSync());
        return name;
      } catch (e) {
        console.warn(`backend ${name} did not start: ${e.message}`);
      }
    }
    throw new Error('no tfjs backend started');
  }

  function rgb(c) {
    return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
  }

  // Binary palettes are the mask files' black/white, invisible over light skin: draw the
  // foreground in the report's prediction green instead.
  const PRED_GREEN = [0, 255, 0];
  function colourOf(k) {
    if (meta.output.decision === 'threshold' && k === 1) return PRED_GREEN;
    return meta.palette[k] || [255, 0, 255];
  }

  function showModel() {
    const inp = meta.input;
    $('model-info').textContent = `${meta.run} (${meta.model}, ${meta.project} ${meta.project_version}): ${meta.num_classes} classes, ` +
      `input ${inp.size[0]}×${inp.size[1]}, ${meta.output.decision}${meta.quantization ? `, ${meta.quantization} weights` : ''}`;
    const legend = $('legend');
    legend.textContent = '';
    meta.class_names.forEach((name, i) => {
      const li = document.createElement('li');
      const sw = document.createElement('span');
      sw.className = 'sw';
      // Class 0 (background) is left transparent over the image.
      sw.style.background = i === 0 ? 'transparent' : rgb(colourOf(i));
      li.append(sw, document.createTextNode(i === 0 ? `${name} (not coloured)` : name));
      legend.append(li);
    });
    const binary = meta.output.decision === 'threshold';
    $('threshold-box').style.display = binary ? '' : 'none';
    if (binary) {
      $('threshold').value = String(meta.output.threshold);
      $('threshold-value').textContent = Number(meta.output.threshold).toFixed(2);
    }
  }

  /** Network input [1,h,w,3]: stretched to the training size, then normalised as metadata input.normalize says. */
  function preprocess(imageCanvas) {
    const [h, w] = meta.input.size;
    return tf.tidy(() => {
      const px = tf.cast(tf.browser.fromPixels(imageCanvas), 'float32');
      const small = tf.image.resizeBilinear(px, [h, w], false, true);
      if (meta.input.normalize === 'image') {
        // By the image's own mean and deviation over all values (at least 1).
        const { mean, variance } = tf.moments(small);
        return tf.expandDims(tf.div(tf.sub(small, mean), tf.maximum(tf.sqrt(variance), 1)), 0);
      }
      const mean = tf.mul(tf.tensor1d(meta.input.mean), 255);
      const std = tf.mul(tf.tensor1d(meta.input.std), 255);
      return tf.expandDims(tf.div(tf.sub(small, mean), std), 0);
    });
  }

  /** Probabilities at the image's own size (bilinear, half-pixel centres, as predict does). */
  function probabilities(x, height, width) {
    return tf.tidy(() => {
      const logits = model.predict(x);
      const p = meta.output.activation === 'sigmoid' ? tf.sigmoid(logits) : tf.softmax(logits);
      return tf.image.resizeBilinear(p, [height, width], false, true);
    });
  }

  async function segment(source) {
    const canvas = $('image');
    canvas.width = source.width;
    canvas.height = source.height;
    canvas.getContext('2d').drawImage(source, 0, 0);
    $('stage').style.display = 'inline-block';
    $('hint').style.display = 'none';
    setStatus('segmenting…');
    const t0 = performance.now();
    const x = preprocess(canvas);
    const probs = probabilities(x, canvas.height, canvas.width);
    x.dispose();
    const c = probs.shape[3];
    let out;
    if (meta.output.decision === 'threshold') {
      // Foreground probability: the sigmoid output, or channel 1 of two softmax outputs.
      const fg = tf.tidy(() => tf.slice(probs, [0, 0, 0, c - 1], [-1, -1, -1, 1]));
      out = { prob: await fg.data() };
      fg.dispose();
    } else {
      const arg = tf.tidy(() => tf.argMax(probs, 3));
      out = { classes: Uint8Array.from(await arg.data()) };
      arg.dispose();
    }
    probs.dispose();
    const ms = performance.now() - t0;
    last = { width: canvas.width, height: canvas.height, ms, ...out };
    draw();
    setStatus('done');
  }

  function classMap() {
    if (last.classes) return last.classes;
    const t = Number($('threshold').value);
    const classes = new Uint8Array(last.prob.length);
    for (let i = 0; i < classes.length; i++) classes[i] = last.prob[i] > t ? 1 : 0;
    return classes;
  }

  function draw() {
    if (!last) return;
    const classes = classMap();
    const mask = $('mask');
    mask.width = last.width;
    mask.height = last.height;
    const ctx = mask.getContext('2d');
    const img = ctx.createImageData(last.width, last.height);
    for (let i = 0; i < classes.length; i++) {
      const k = classes[i];
      if (k === 0 || k === meta.ignore_index) continue;
      const col = colourOf(k);
      img.data.set([col[0], col[1], col[2], 255], 4 * i);
    }
    ctx.putImageData(img, 0, 0);
    mask.style.opacity = $('opacity').value;
    $('stats').textContent = `${last.ms.toFixed(1)} ms on ${api.backend} · image ${last.width}×${last.height} · network ${meta.input.size[0]}×${meta.input.size[1]}`;
    api.result = { width: last.width, height: last.height, ms: last.ms, backend: api.backend, threshold: last.classes ? null : Number($('threshold').value), classes: Array.from(classes) };
  }

  async function openFile(file) {
    if (!file) return;
    try {
      // As decoded, without colour-space conversion: the training pipeline reads raw sRGB values;
      // turned upright by its EXIF orientation, as Node's pipeline does (pipeline/decode.ts).
      const bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image' });
      await segment(bitmap);
      bitmap.close();
    } catch (e) {
      api.error = String(e && e.message ? e.message : e);
      setStatus(`cannot segment ${file.name}: ${api.error}`, true);
    }
  }

  function wire() {
    $('file').addEventListener('change', async (e) => {
      await openFile(e.target.files[0]);
      e.target.value = ''; // choosing the same file again segments it again
    });
    const drop = $('drop');
    drop.addEventListener('dragover', (e) => {
      e.preventDefault();
      drop.classList.add('over');
    });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => {
      e.preventDefault();
      drop.classList.remove('over');
      openFile(e.dataTransfer.files[0]);
    });
    $('opacity').addEventListener('input', () => {
      $('opacity-value').textContent = Number($('opacity').value).toFixed(2);
      $('mask').style.opacity = $('opacity').value;
    });
    $('threshold').addEventListener('input', () => {
      $('threshold-value').textContent = Number($('threshold').value).toFixed(2);
      draw();
    });
  }

  async function start() {
    wire();
    try {
      api.backend = await pickBackend();
      setStatus(`backend ${api.backend}; loading model.json…`);
      model = await tf.loadLayersModel('model.json');
      meta = api.meta = model.getUserDefinedMetadata();
      api.colours = meta.class_names.map((_, k) => colourOf(k)); // what each class is drawn in (tests read it)
      if (!meta || !meta.input) throw new Error('model.json has no tfjs-semseg metadata (userDefinedMetadata)');
      showModel();
      // One warm-up run, so the time shown is the steady one (shaders compiled, memory placed).
      const [h, w] = meta.input.size;
      tf.tidy(() => model.predict(tf.zeros([1, h, w, meta.input.channels])).dataSync());
      api.ready = true;
      setStatus(`ready (backend ${api.backend}): pick or drop an image`);
    } catch (e) {
      api.error = String(e && e.message ? e.message : e);
      setStatus(`cannot start: ${api.error}`, true);
    }
  }

  start();
})();
