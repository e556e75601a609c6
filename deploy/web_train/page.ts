// The browser training page's script (bundled by bundle.ts; the page is index.html beside
// it). Everything that trains is the project's own code: the config checked by parseConfig,
// the model from the registry, makeTrainStep, the losses, optimizers and schedules, the
// BatchLoader with its paired augmentation, validation by engine/validation.ts, the export's
// metadata and file layout. This file only wires the page: picking folders, the backend,
// progress, curves, overlays, checkpoints (browser_store.ts) and downloads. Tested in headless
// Chromium by test/web_train.test.ts; the self-test here checks the pieces that run in Node.
import * as tf from '../../backends/tf';
import '@tensorflow/tfjs-backend-wasm';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import yaml from 'js-yaml';
import './registry_entries';
import { parseConfig, Resolved, resolveRun } from '../../config/resolve';
import { Config, dumpConfig, isBinary } from '../../utils/config';
import { parseYamlText } from '../../utils/config_files';
import { getModel } from '../../models/registry';
import { buildLoss } from '../../training/losses';
import { createOptimizer } from '../../training/optimizers';
import { lrAt } from '../../training/lr_schedule';
import { BatchLoader, normaliseImage } from '../../pipeline/batcher';
import { makeTrainStep } from '../../engine/train_step';
import { validate } from '../../engine/validation';
import { preflightTrain } from '../../engine/preflight';
import { loadEncoderWeights } from '../../engine/resume';
import { isPretrainedSource } from '../../models/encoders/index';
import { predictProbs, probsToMask } from '../../engine/inference';
import { overlayRgb } from '../../report/overlay';
import { applyWeights, snapshotWeights } from '../../storage/checkpoint';
import { modelFiles } from '../../storage/model_files';
import { portableModel } from '../../engine/portable';
import { datasetMeta, PairRef, resolveDataset } from '../../loaders/registry';
import type { FolderOptions } from '../../loaders/folder';
import { exportMetadata } from '../export_model';
import { registerWasmGradKernels } from '../../backends/wasm_kernels';
import { registerWasmCopies } from '../../backends/wasm_copies';
import { registerPoolGrads } from '../../backends/wasm_pool_grads';
import { registerDepthwiseGrads } from '../../backends/wasm_depthwise_grads';
import { registerFilterGradKernel } from '../../backends/conv_grads';
import { registerWebgpuKernels } from '../../backends/webgpu_kernels';
import { watchDevice } from '../../backends/webgpu_errors';
import { UserError } from '../../utils/errors';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { pairAndSplit, Split } from './data';
import { composePicked } from './config_pick';
import { mountRecipeForm } from './recipe_form';
import { decodeImage, setFiles } from './browser_decode';
import { filesSignature, forgetCheckpoint, getCheckpoint, PickedFile, putCheckpoint } from './browser_store';

/** The config the page starts with: the demo recipe on the folder loader, small enough for a laptop. */
export const DEFAULT_CONFIG = `# The same schema as npx train's configs (configs/*.yaml); data.name, root and folders come from the page.
name: web
model: { name: unet, base: 8, depth: 3 }
data:
  num_classes: 2
  size: [64, 64]
  value_map: { "255": 1 }
training:
  epochs: 10
  batch_size: 4
  seed: 42
  loss: { name: bce+dice }
  optimizer: { name: adam, lr: 0.003 }
  lr_schedule: { name: cosine, warmup_iters: 10 }
  augmentations: { hflip: { p: 0.5 }, vflip: { p: 0.5 } }
  val_interval: 1
checkpoint: { best_metric: val.dice }
`;

/**
 * The raw config with the page's data: the folder loader over the picked folders. The
 * picked folders' names go into the downloadable config.yaml, data.root left for the user.
 */
export function withPageData(raw: Record<string, any>, imagesDir: string, masksDir: string): Record<string, any> {
  if ('extends' in raw) throw new UserError(`config.yaml: key 'extends' names files the page cannot read; load the config and the files it extends together with the file picker`);
  // Pretrained sources (imagenet) are fetched from beside the page; a path names a file the page cannot read.
  const enc = raw.model?.encoder_weights;
  if (typeof enc === 'string' && !isPretrainedSource(enc)) throw new UserError(`config.yaml: model.encoder_weights '${enc}' is a path the page cannot read; use imagenet or leave it out`);
  if (raw.checkpoint?.weights) throw new UserError(`config.yaml: checkpoint.weights names files the page cannot read; leave it out`);
  const data = { ...(raw.data ?? {}) };
  data.name = 'folder';
  data.root = data.root ?? '.';
  data.images_dir = imagesDir;
  data.masks_dir = masksDir;
  const training = { ...(raw.training ?? {}), workers: 1 }; // one thread: the page's decode is the browser's
  return { ...raw, data, training };
}

/** Backends in the order Node's `auto` prefers them (a GPU first), with the browser's webgl after webgpu. */
export const BACKEND_ORDER = ['webgpu', 'webgl', 'wasm', 'cpu'] as const;

export const selfTest: SelfTest = {
  'the default config is valid, and the page sets the folder loader over the picked folders'() {
    const cfg = parseConfig(withPageData(parseYamlText(DEFAULT_CONFIG, 'config.yaml'), 'images', 'masks'), 'config.yaml');
    assert.deepEqual([cfg.data.name, cfg.data.images_dir, cfg.data.masks_dir, cfg.training.workers], ['folder', 'images', 'masks', 1]);
    assert.throws(() => withPageData({ extends: 'a.yaml' }, 'i', 'm'), /key 'extends'/);
    assert.throws(() => withPageData({ model: { encoder_weights: 'runs/x/best' } }, 'i', 'm'), /^UserError: config\.yaml: model\.encoder_weights 'runs\/x\/best' is a path the page cannot read; use imagenet or leave it out$/);
    assert.doesNotThrow(() => withPageData({ model: { encoder_weights: 'imagenet' } }, 'i', 'm'));
    assert.throws(() => withPageData({ checkpoint: { weights: 'w' } }, 'i', 'm'), /checkpoint\.weights names files the page cannot read/);
    assert.throws(() => parseConfig(withPageData({ training: { epohcs: 2 } }, 'i', 'm'), 'config.yaml'), (e: Error) => e instanceof UserError && /^config\.yaml: unknown key 'training\.epohcs'/.test(e.message));
  },
};

runIfMain(module, selfTest);

// ---- The page (browser only) ----


/** Draws an RGB overlay (report/overlay.ts) on `c`, sized to it; returns `c`. */
function drawRgb(c: HTMLCanvasElement, o: { width: number; height: number; data: Uint8Array }): HTMLCanvasElement {
  c.width = o.width;
  c.height = o.height;
  const img = new ImageData(o.width, o.height);
  for (let p = 0, q = 0; q < o.data.length; p += 4, q += 3) {
    img.data[p] = o.data[q];
    img.data[p + 1] = o.data[q + 1];
    img.data[p + 2] = o.data[q + 2];
    img.data[p + 3] = 255;
  }
  c.getContext('2d')!.putImageData(img, 0, 0);
  return c;
}

function start(): void {
  const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
  const params = new URLSearchParams(location.search);
  // Read by tests and by anyone scripting the page.
  const api = ((window as any).semsegTrain = {
    ready: false, backend: null as string | null, state: 'idle', step: 0, totalSteps: 0, epoch: 0,
    losses: [] as number[], val: [] as { step: number; metrics: Record<string, number> }[], valIds: [] as string[],
    restored: false, error: null as string | null, msPerStep: null as number | null, saves: 0, warnings: [] as string[], filesKept: null as boolean | null,
    encoderWeights: null as string | null, // model.encoder_weights's log line, as train's
    segmented: null as { width: number; height: number; classes: number[] } | null, // the last segmented image's class ids
  });
  let picked: { images: File[]; masks: File[] } = { images: [], masks: [] };
  let restoredFiles: PickedFile[] | null = null;
  let stopRequested = false;
  let current: { cfg: Config; parts: Resolved; model: tf.LayersModel } | null = null;

  const setStatus = (text: string, isError = false) => {
    $('status').textContent = text;
    $('status').className = isError ? 'error' : '';
    if (isError) api.error = text;
  };
  const fail = (e: unknown) => {
    api.state = 'error';
    setStatus(e instanceof UserError ? e.message : `error: ${(e as Error)?.message ?? e}`, true);
    if (!(e instanceof UserError)) console.error(e); // a user's mistake is the status line; a bug gets its stack
    $<HTMLButtonElement>('train').disabled = false;
    $<HTMLButtonElement>('stop').disabled = true;
    $<HTMLSelectElement>('backend').disabled = false;
  };

  async function pickBackend(): Promise<string> {
    // ?backend= only sets the choice's first value (start), so the choice can change it later.
    const want = $<HTMLSelectElement>('backend').value !== 'auto' ? $<HTMLSelectElement>('backend').value : '';
    const order = want ? [want] : [...BACKEND_ORDER];
    const skipped: string[] = [];
    for (const name of order) {
      try {
        if (name === 'webgpu') {
          const gpu = (navigator as any).gpu;
          // Loaded here, not at the top: in Node (this module's self-test) they would register browser backends.
          if (!tf.findBackendFactory('webgpu')) await import('@tensorflow/tfjs-backend-webgpu').catch(() => null);
          if (!gpu || !(await gpu.requestAdapter().catch(() => null))) { skipped.push('webgpu: no adapter'); continue; }
        }
        if (name === 'webgl' && !tf.findBackendFactory('webgl')) await import('@tensorflow/tfjs-backend-webgl');
        if (name === 'wasm') setWasmPaths(new URL('./', location.href).href);
        if (!(await tf.setBackend(name))) { skipped.push(`${name}: did not start`); continue; }
        await tf.ready();
        tf.tidy(() => tf.add(tf.scalar(1), tf.scalar(1)).dataSync());
        if (name === 'wasm') {
          // The kernels Node's wasm backend trains with (backends/index.ts startWasm).
          registerWasmGradKernels();
          registerWasmCopies();
          registerPoolGrads();
          registerDepthwiseGrads();
        }
        if (name === 'webgpu') {
          // As backends/webgpu.ts startWebgpu: the project's kernels (batch norm, Adam, dW by
          // matmul, webgpuFilterGrad's default) and device-error watching (checkDevice).
          registerFilterGradKernel('webgpu', 'matmul');
          registerWebgpuKernels();
          watchDevice();
        }
        if (name === 'cpu') registerPoolGrads();
        $('backend-info').textContent = `backend: ${name}${skipped.length ? ` (skipped ${skipped.join('; ')})` : ''}`;
        return name;
      } catch (e) {
        skipped.push(`${name}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    throw new UserError(`no backend started: ${skipped.join('; ')}`);
  }

  function readConfig(): { cfg: Config; text: string } {
    const text = $<HTMLTextAreaElement>('config').value;
    const raw = parseYamlText(text, 'config.yaml');
    const imagesDir = (picked.images[0]?.webkitRelativePath || restoredFiles?.find((f) => f.kind === 'image')?.path || 'images').split('/')[0];
    // No mask folder: the image folder holds both (data.mask_suffix tells them apart), as Node's folder loader reads it.
    const masksDir = (picked.masks[0]?.webkitRelativePath || restoredFiles?.find((f) => f.kind === 'mask')?.path || imagesDir).split('/')[0];
    const cfg = parseConfig(withPageData(raw, imagesDir, masksDir), 'config.yaml');
    return { cfg, text };
  }

  // The recipe form: each change an edit of the YAML, which stays what trains.
  const showForm = mountRecipeForm($('recipe-form'), {
    get: () => $<HTMLTextAreaElement>('config').value,
    set: (text) => { $<HTMLTextAreaElement>('config').value = text; checkConfigLive(); describeData(); },
  }, (message) => { $('config-error').textContent = message; $('config-error').className = 'error'; });

  function checkConfigLive(): void {
    try {
      const { cfg } = readConfig();
      showForm(cfg);
      $('config-error').textContent = `ok: ${cfg.model.name}, ${cfg.training.loss.name}, ${cfg.training.optimizer.name}, ${cfg.training.lr_schedule.name}`;
      $('config-error').className = 'ok';
    } catch (e) {
      $('config-error').textContent = (e as Error).message;
      $('config-error').className = 'error';
    }
  }

  function fileList(): PickedFile[] {
    if (picked.images.length || picked.masks.length) {
      return [...picked.images.map((f) => ({ path: f.webkitRelativePath || f.name, blob: f as Blob, kind: 'image' as const })), ...picked.masks.map((f) => ({ path: f.webkitRelativePath || f.name, blob: f as Blob, kind: 'mask' as const }))];
    }
    return restoredFiles ?? [];
  }

  function describeData(): void {
    try {
      const files = fileList();
      if (!files.some((f) => f.kind === 'image')) {
        $('data-info').textContent = 'pick an image folder and a mask folder, or one folder holding both';
        return;
      }
      const { cfg } = readConfig();
      const split = splitOf(cfg, files);
      $('data-info').textContent = `${split.train.length + split.val.length} pairs: ${split.train.length} train, ${split.val.length} val (${split.from === 'folders' ? 'from the train/val sub-folders' : 'by fraction'})`;
      $('data-info').className = '';
    } catch (e) {
      $('data-info').textContent = (e as Error).message;
      $('data-info').className = 'error';
    }
  }

  function splitOf(cfg: Config, files: PickedFile[]): Split {
    const valFraction = Number($<HTMLInputElement>('val-fraction').value);
    return pairAndSplit(files.filter((f) => f.kind === 'image').map((f) => f.path), files.filter((f) => f.kind === 'mask').map((f) => f.path), {
      maskSuffix: (resolveDataset(cfg).options as FolderOptions).mask_suffix, valFraction, seed: cfg.training.seed, trainSplit: cfg.data.train_split, valSplit: cfg.data.val_split,
    });
  }

  // ---- curves ----
  function drawCurves(): void {
    const c = $<HTMLCanvasElement>('curve');
    const ctx = c.getContext('2d')!;
    const W = c.width, H = c.height, pad = 30;
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, W, H);
    ctx.strokeStyle = '#ccd';
    ctx.strokeRect(pad, 8, W - pad - 8, H - pad - 8);
    const L = api.losses;
    const total = Math.max(api.totalSteps, L.length, 1);
    const x = (i: number) => pad + ((W - pad - 8) * i) / total;
    if (L.length) {
      const max = Math.max(...L.filter(Number.isFinite), 1e-6);
      const y = (v: number) => 8 + (H - pad - 8) * (1 - v / max);
      ctx.strokeStyle = '#2f6fed';
      ctx.lineWidth = 2;
      ctx.beginPath();
      L.forEach((v, i) => (i ? ctx.lineTo(x(i + 1), y(v)) : ctx.moveTo(x(i + 1), y(v))));
      ctx.stroke();
      ctx.fillStyle = '#2f6fed';
      ctx.font = '11px system-ui';
      ctx.fillText(`loss ${L[L.length - 1].toFixed(4)} (max ${max.toFixed(3)})`, pad + 4, H - 10);
    }
    if (api.val.length && current) {
      const key = current.cfg.checkpoint.best_metric.replace(/^val\./, '');
      const y = (v: number) => 8 + (H - pad - 8) * (1 - v);
      ctx.strokeStyle = '#d0367a';
      ctx.fillStyle = '#d0367a';
      ctx.beginPath();
      api.val.forEach((v, i) => {
        const m = v.metrics[key] ?? NaN;
        if (i) ctx.lineTo(x(v.step), y(m));
        else ctx.moveTo(x(v.step), y(m));
        ctx.fillRect(x(v.step) - 2, y(m) - 2, 4, 4);
      });
      ctx.stroke();
      const last = api.val[api.val.length - 1].metrics[key];
      ctx.fillText(`val.${key} ${last?.toFixed(4)}`, W / 2, H - 10);
    }
  }

  function progress(): void {
    const bar = $<HTMLProgressElement>('progress');
    bar.max = Math.max(1, api.totalSteps);
    bar.value = api.step;
    $('progress-text').textContent = `step ${api.step} / ${api.totalSteps}, epoch ${api.epoch + 1}${api.msPerStep ? `, ${api.msPerStep.toFixed(0)} ms/step` : ''}`;
  }

  // ---- validation and overlays ----
  async function runValidation(cfg: Config, model: tf.LayersModel, val: PairRef[]): Promise<void> {
    if (!val.length) return;
    // The first four overlays come from the same pass as the metrics (engine/evaluator.ts).
    const res = await validate(model, cfg, val, 4);
    api.val.push({ step: api.step, metrics: res.metrics });
    const rows = Object.entries(res.metrics).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(' · ');
    $('val-info').textContent = `val at step ${api.step} (${res.images} images): ${rows}`;
    $('overlays').replaceChildren(...(res.overlays ?? []).map((o) => {
      const c = drawRgb(document.createElement('canvas'), { width: o.width, height: o.height, data: o.rgb });
      c.title = o.id;
      return c;
    }));
  }

  // ---- checkpoints ----
  async function save(cfgText: string, model: tf.LayersModel, optimizer: ReturnType<typeof createOptimizer>): Promise<void> {
    const files = fileList();
    const savedAt = Date.now();
    const kept = await putCheckpoint({
      configText: cfgText, valFraction: Number($<HTMLInputElement>('val-fraction').value), step: api.step, epoch: api.epoch,
      weights: (await snapshotWeights(model)).map(({ name, shape, values }) => ({ name, shape, values })),
      optimizer: await optimizer.getState(), losses: api.losses, val: api.val, savedAt,
    }, files);
    api.saves++;
    api.filesKept = kept;
    $('ckpt-info').textContent = `checkpoint saved in this browser at step ${api.step} (${new Date(savedAt).toLocaleTimeString()})` +
      (kept ? '' : `; its ${files.length} files did not fit in this browser's storage: after a reload, pick the same folders again to resume`);
  }

  // ---- training ----
  async function train(): Promise<void> {
    stopRequested = false;
    $<HTMLButtonElement>('train').disabled = true;
    $<HTMLSelectElement>('backend').disabled = true; // a run stays on the backend it started on
    $<HTMLButtonElement>('stop').disabled = false;
    api.state = 'training';
    api.error = null;
    const { cfg, text } = readConfig();
    const files = fileList();
    setFiles(files.map((f) => [f.path, f.blob]));
    const split = splitOf(cfg, files);
    api.valIds = split.val.map((p) => p.id);
    const t = cfg.training;
    const saved = await getCheckpoint();
    const resume = saved && saved.configText === text && saved.step > 0 ? saved : null;
    const parts = resolveRun(cfg);
    // Node's checks before the first step (engine/preflight.ts): the same one-line refusals and
    // warnings. The memory ceiling is the wasm heap; a browser does not say how much a GPU has.
    api.warnings = [];
    const warn = (line: string) => { api.warnings.push(line); $('warnings').textContent = api.warnings.join('\n'); };
    $('warnings').textContent = '';
    preflightTrain(parts, { backend: api.backend!, warn, memoryLimit: api.backend === 'wasm' ? undefined : null });
    if (resume?.filesSignature && filesSignature(files) !== resume.filesSignature) {
      warn(`warning: the picked files are not those the checkpoint trained on (${resume.fileCount} files then, ${files.length} now, or their names or sizes differ); resuming on these`);
    }
    const model = getModel(parts.model);
    const optimizer = createOptimizer(parts.optimizer);
    let epoch = 0;
    if (resume) {
      applyWeights(model, resume.weights, 'the browser checkpoint');
      await optimizer.setState(resume.optimizer);
      api.step = resume.step;
      epoch = resume.epoch;
      api.losses = [...resume.losses];
      api.val = [...resume.val];
    } else {
      api.step = 0;
      api.losses = [];
      api.val = [];
      // As train's fresh start (engine/resume.ts): imagenet's files are fetched from beside the page.
      await loadEncoderWeights(parts, model, (line) => { api.encoderWeights = line; $('ckpt-info').textContent = line; }).catch((e) => {
        model.dispose(); // not yet the page's current model
        throw e;
      });
    }
    current?.model.dispose();
    current = { cfg, parts, model };
    const step = makeTrainStep(model, buildLoss(parts.loss), optimizer, t.seed);
    const loader = new BatchLoader(cfg, split.train, { train: true, threads: false });
    const spe = loader.stepsPerEpoch;
    const total = t.iterations ?? t.epochs * spe;
    api.totalSteps = total;
    const saveEvery = cfg.checkpoint.save_every_iters || spe;
    setStatus(resume ? `resumed at step ${resume.step}` : 'training…');
    let stopped = false;
    try {
      const t0 = performance.now();
      let timed = 0;
      while (api.step < total && !stopped) {
        api.epoch = epoch;
        const skip = api.step - epoch * spe;
        for await (const batch of loader.batches(epoch, skip)) {
          const lr = lrAt(parts.schedule, t.optimizer.lr, api.step, total, spe);
          optimizer.setLearningRate(lr);
          const loss = await step(batch, api.step);
          if (!Number.isFinite(loss)) throw new UserError(`loss (or a gradient) became ${loss} at step ${api.step + 1}; training stopped. Try a lower training.optimizer.lr or set training.grad_clip`);
          api.step++;
          timed++;
          api.msPerStep = (performance.now() - t0) / timed;
          api.losses.push(loss);
          progress();
          drawCurves();
          if (api.step % saveEvery === 0 && api.step < total) await save(text, model, optimizer);
          if (stopRequested || api.step >= total) break;
          await new Promise((r) => setTimeout(r, 0)); // let the page paint and take clicks
        }
        if (api.step === (epoch + 1) * spe) {
          epoch++;
          api.epoch = epoch;
          if (epoch % t.val_interval === 0 || api.step >= total) await runValidation(cfg, model, split.val);
        }
        if (stopRequested && api.step < total) stopped = true;
      }
      if (api.val.length === 0 || api.val[api.val.length - 1].step !== api.step) if (!stopped) await runValidation(cfg, model, split.val);
      await save(text, model, optimizer);
      drawCurves();
      api.state = stopped ? 'stopped' : 'done';
      setStatus(stopped ? `stopped at step ${api.step}; saved. Train resumes from here.` : `done: ${api.step} steps. Download the model, or segment an image below.`);
      $<HTMLButtonElement>('download').disabled = false;
      $<HTMLInputElement>('segment-file').disabled = false;
    } finally {
      step.dispose();
      $<HTMLSelectElement>('backend').disabled = false;
      $<HTMLButtonElement>('train').disabled = false;
      $<HTMLButtonElement>('stop').disabled = true;
    }
  }

  // ---- results ----
  function download(name: string, data: BlobPart, type: string): void {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([data], { type }));
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  }

  /** The export `npx export-model` writes (model.json with its metadata, weight shards) and the run's config.yaml. */
  async function exportFiles(): Promise<{ name: string; data: Uint8Array }[]> {
    if (!current) throw new UserError('train (or resume) first: there is no model yet');
    const { cfg, parts, model } = current;
    const portable = await portableModel(model, cfg.data.size, parts.model.definition);
    let artifacts!: tf.io.ModelArtifacts;
    await portable.save(tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(a) };
    }));
    portable.dispose();
    const pkg = exportMetadata(cfg, 'browser:indexeddb', null, null);
    artifacts.convertedBy = `${pkg.project} ${pkg.project_version} web-train`;
    const last = api.val[api.val.length - 1];
    const key = cfg.checkpoint.best_metric;
    const meta = exportMetadata(cfg, 'browser:indexeddb', { epoch: api.epoch, step: api.step, bestMetricName: key, bestMetric: last ? last.metrics[key.replace(/^val\./, '')] ?? null : null }, null);
    const cfgYaml = `# Trained in the browser (tfjs-semseg web-train). Set data.root to the folder holding ${cfg.data.images_dir}/ and ${cfg.data.masks_dir}/.\n${dumpConfig(cfg)}`;
    return [...modelFiles(artifacts, meta as unknown as Record<string, unknown>), { name: 'config.yaml', data: new TextEncoder().encode(cfgYaml) }];
  }

  // ---- segment a new image, as the deploy page does ----
  async function segment(file: File): Promise<void> {
    if (!current) return;
    const { cfg, model } = current;
    setFiles([...fileList().map((f) => [f.path, f.blob] as [string, Blob]), ['__segment__', file]]);
    const img = await decodeImage('__segment__', cfg.data.size);
    const x = normaliseImage(img.data, cfg.data);
    const probs = tf.tidy(() => predictProbs(model, tf.tensor4d(x, [1, img.height, img.width, 3])));
    const { classes } = await probsToMask(probs, img.width, img.height, { threshold: cfg.training.threshold });
    probs.dispose();
    api.segmented = { width: img.width, height: img.height, classes: Array.from(classes) };
    const o = overlayRgb(img.data, img.width, img.height, classes, null, { binary: isBinary(cfg), palette: datasetMeta(cfg).palette, ignoreIndex: cfg.data.ignore_index });
    drawRgb($<HTMLCanvasElement>('segment-out'), o);
  }

  // ---- wiring ----
  $<HTMLTextAreaElement>('config').value = DEFAULT_CONFIG;
  $('config').addEventListener('input', () => { checkConfigLive(); describeData(); });
  $<HTMLInputElement>('config-file').addEventListener('change', async (e) => {
    const files = Array.from((e.target as HTMLInputElement).files ?? []);
    try {
      // The config with the files it extends, composed: the text area holds what trains.
      if (files.length) $<HTMLTextAreaElement>('config').value = composePicked(await Promise.all(files.map(async (f) => ({ name: f.name, text: await f.text() }))));
      checkConfigLive();
    } catch (err) {
      $('config-error').textContent = (err as Error).message;
      $('config-error').className = 'error';
    }
    describeData();
  });
  $<HTMLInputElement>('images').addEventListener('change', (e) => { picked.images = Array.from((e.target as HTMLInputElement).files ?? []); restoredFiles = null; describeData(); });
  $<HTMLInputElement>('masks').addEventListener('change', (e) => { picked.masks = Array.from((e.target as HTMLInputElement).files ?? []); restoredFiles = null; describeData(); });
  $('val-fraction').addEventListener('input', describeData);
  // A new choice starts that backend now; the model's tensors move to it when next used.
  $('backend').addEventListener('change', () => {
    api.backend = null;
    pickBackend().then((b) => { api.backend = b; }, fail);
  });
  $('train').addEventListener('click', () => train().catch(fail));
  $('stop').addEventListener('click', () => { stopRequested = true; setStatus('stopping after this step…'); });
  $('download').addEventListener('click', async () => {
    try {
      for (const f of await exportFiles()) download(f.name, f.data as Uint8Array<ArrayBuffer>, f.name.endsWith('.json') ? 'application/json' : f.name.endsWith('.yaml') ? 'text/yaml' : 'application/octet-stream');
    } catch (e) {
      fail(e);
    }
  });
  $('segment-file').addEventListener('change', (e) => { const f = (e.target as HTMLInputElement).files?.[0]; if (f) segment(f).catch(fail); });
  $('forget').addEventListener('click', async () => { await forgetCheckpoint(); location.reload(); });
  (window as any).semsegTrainExport = exportFiles; // tests compare the download with this

  (async () => {
    if (params.get('backend')) $<HTMLSelectElement>('backend').value = params.get('backend')!;
    api.backend = await pickBackend();
    const saved = await getCheckpoint();
    if (saved) {
      $<HTMLTextAreaElement>('config').value = saved.configText;
      $<HTMLInputElement>('val-fraction').value = String(saved.valFraction);
      restoredFiles = saved.files; // null where the storage could not keep them
      api.step = saved.step;
      api.epoch = saved.epoch;
      api.losses = saved.losses;
      api.val = saved.val;
      api.restored = true;
      const { cfg } = readConfig();
      if (saved.files) {
        const spe = Math.floor(splitOf(cfg, saved.files).train.length / cfg.training.batch_size);
        api.totalSteps = cfg.training.iterations ?? cfg.training.epochs * spe;
      }
      const parts = resolveRun(cfg);
      current = { cfg, parts, model: getModel(parts.model) };
      applyWeights(current.model, saved.weights, 'the browser checkpoint');
      $<HTMLButtonElement>('download').disabled = false;
      $<HTMLInputElement>('segment-file').disabled = false;
      const when = `found a checkpoint from ${new Date(saved.savedAt).toLocaleString()} at step ${saved.step}`;
      setStatus(saved.files
        ? `${when} with its ${saved.files.length} files: Train resumes it (Forget starts over)`
        : `${when}; its ${saved.fileCount} files did not fit in this browser's storage: pick the same folders again, then Train resumes it (Forget starts over)`);
      progress();
      drawCurves();
    } else {
      setStatus('pick the folders, check the config, then Train');
    }
    checkConfigLive();
    describeData();
    api.ready = true;
  })().catch(fail);
}

if (typeof document !== 'undefined' && (globalThis as { __semsegBundle?: boolean }).__semsegBundle) start();
