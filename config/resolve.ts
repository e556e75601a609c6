// Config resolution: the config checked by the schema (utils/config.ts), then each named part's
// own keys by that part's schema, found in its registry (the model, the dataset, the loss,
// the optimizer, the LR schedule), defaults filled. It sits above models/, loaders/ and
// training/ because it asks their registries; they import only the schema's types, so no
// circle is hidden here.
import fs from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { COMMON_MODEL_KEYS, getModelDefinition, ResolvedModel, resolveModel } from '../models/registry';
import { DatasetDefinition, getDataset, registeredDatasets, ResolvedDataset, resolveDataset } from '../loaders/registry';
import { ResolvedLoss, resolveLoss, resolveLossSection } from '../training/losses';
import { ResolvedOptimizer, resolveOptimizer, resolveOptimizerSection } from '../training/optimizers';
import { ResolvedSchedule, resolveSchedule, resolveScheduleSection } from '../training/lr_schedule';
import { applySet, COMMON_DATA_KEYS, Config, formatIssues, outChannels, parseSchema, readConfig, show } from '../utils/config';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';

/** The validated config: every key typed and defaulted, the named parts' own keys by their schemas. */
export function parseConfig(raw: unknown, source = 'config'): Config {
  const cfg = parseSchema(raw, source);
  cfg.model = resolveModelSection(cfg.model, source, raw);
  cfg.data = resolveDataSection(cfg.data, source, raw);
  // The named loss, optimizer and schedule own their keys (training/).
  const t = cfg.training;
  t.loss = resolveLossSection(t.loss, source, raw) as typeof t.loss;
  t.optimizer = resolveOptimizerSection(t.optimizer, source, raw) as typeof t.optimizer;
  t.lr_schedule = resolveScheduleSection(t.lr_schedule, source, raw) as typeof t.lr_schedule;
  return cfg;
}

/** The `model:` section with the chosen model's own keys checked by its schema and defaulted. */
function resolveModelSection(model: Config['model'], source: string, raw: unknown): Config['model'] {
  const common: Record<string, unknown> = {};
  const own: Record<string, unknown> = { ...model };
  for (const k of COMMON_MODEL_KEYS) {
    common[k] = own[k];
    delete own[k];
  }
  let def;
  try {
    def = getModelDefinition(model.name);
  } catch (err) {
    throw new UserError(`${source}: key 'model.name' has ${show(model.name)}; ${(err as Error).message.replace(/^model\.name '[^']*' /, '')}`);
  }
  const opts = def.options.strict().safeParse(own);
  if (!opts.success) throw new UserError(formatIssues(source, raw, opts.error.issues.map((i) => ({ ...i, path: ['model', ...i.path] }))));
  return { ...common, ...opts.data } as Config['model'];
}

/** Whether `value` of key `k` is what `options` gives when the key is absent (its default). */
function isDefault(options: DatasetDefinition['options'], k: string, value: unknown): boolean {
  const one = options.pick({ [k]: true });
  const got = one.safeParse({ [k]: value });
  return got.success && JSON.stringify(got.data) === JSON.stringify(one.safeParse({}).data);
}

/**
 * The `data:` section with the chosen dataset's own keys checked by its schema and defaulted.
 * A key it does not own is one line naming it, another dataset's too; null unsets one a base
 * config set (`--set data.synthetic=null` after `--set data.name=isic` on the demo config).
 */
function resolveDataSection(data: Config['data'], source: string, raw: unknown): Config['data'] {
  const common: Record<string, unknown> = {};
  const own: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(data)) {
    if (COMMON_DATA_KEYS.includes(k)) common[k] = v;
    else if (v !== null && v !== undefined) own[k] = v;
  }
  let def: DatasetDefinition;
  try {
    def = getDataset(data.name);
  } catch (err) {
    if (!(err instanceof UserError)) throw err;
    throw new UserError(`${source}: key 'data.name' has ${show(data.name)}; ${err.message.replace(/^data\.name '[^']*' /, '')}`);
  }
  const shape = def.options.shape;
  for (const k of Object.keys(own)) {
    if (k in shape) continue;
    const owners = registeredDatasets().filter((n) => n !== def.name && k in getDataset(n).options.shape);
    // Configs saved by earlier versions hold every dataset's defaults (data.mask_suffix '',
    // data.synthetic), which never had an effect on another dataset: dropped.
    if (owners.some((n) => isDefault(getDataset(n).options, k, own[k]))) {
      delete own[k];
      continue;
    }
    const whose = owners.length ? `, dataset ${owners.map((n) => `'${n}'`).join(', ')} has: remove it or set it to null` : ': check the spelling';
    throw new UserError(`${source}: unknown key 'data.${k}' (dataset '${def.name}' has no such option${whose}; its options: ${Object.keys(shape).join(', ') || 'none'})`);
  }
  const opts = def.options.strict().safeParse(own);
  if (!opts.success) throw new UserError(formatIssues(source, raw, opts.error.issues.map((i) => ({ ...i, path: ['data', ...i.path] }))));
  return { ...common, ...opts.data } as Config['data'];
}

/**
 * Reads a YAML config (and the configs it `extends:`), applies `--set` overrides,
 * validates; errors are UserErrors.
 */
export function loadConfig(file: string, sets: string[] = []): Config {
  return parseConfig(readConfig(file, sets), path.basename(file));
}

/**
 * A run's parts, each looked up in its registry and its options parsed once, here: what the
 * engine (training, memory estimate, evaluation, prediction, export) builds from. The plain
 * settings (data.size, training.batch_size, ...) stay in `cfg`, carried alongside.
 */
export interface Resolved {
  cfg: Config;
  model: ResolvedModel;
  dataset: ResolvedDataset;
  loss: ResolvedLoss;
  optimizer: ResolvedOptimizer;
  schedule: ResolvedSchedule;
}

/**
 * The parts of a config validated by parseConfig (or restored from a checkpoint's, after
 * engine/model_io.ts useCheckpointDefinition adopted its network). Resolve again after
 * changing `cfg`: the parts are not re-read from it.
 */
export function resolveRun(cfg: Config): Resolved {
  const t = cfg.training;
  return { cfg, model: resolveModel(cfg), dataset: resolveDataset(cfg), loss: resolveLoss(cfg), optimizer: resolveOptimizer(cfg), schedule: resolveSchedule(t.lr_schedule) };
}

export const selfTest: SelfTest = {
  'resolveRun looks each part up once, with the options the config resolved'() {
    const cfg = parseConfig({ model: { depth: 3 }, training: { loss: { name: 'ce+dice', smooth: 2 }, optimizer: { name: 'sgd', nesterov: true }, lr_schedule: { name: 'step', step_size: 4 } } });
    const r = resolveRun(cfg);
    assert.equal(r.cfg, cfg);
    assert.deepEqual([r.model.definition.name, r.model.options.depth, r.model.io.outChannels], ['unet', 3, 1]);
    assert.deepEqual([r.dataset.definition.name, r.dataset.options.synthetic], ['synthetic', { kind: 'lesion', train: 240, val: 60, image_size: 128 }]);
    assert.deepEqual(r.loss.parts.map((p) => [p.definition.name, p.options.smooth]), [['ce', undefined], ['dice', 2]]);
    assert.deepEqual([r.optimizer.definition.name, r.optimizer.options, r.optimizer.common.lr], ['sgd', { momentum: 0.9, nesterov: true }, 1e-3]);
    assert.deepEqual([r.schedule.definition.name, r.schedule.options.step_size, r.schedule.warmupIters], ['step', 4, 0]);
  },
  "the model section is checked by the chosen model's own schema"() {
    assert.throws(() => parseConfig({ model: { name: 'unet', bsae: 4 } }, 'x.yaml'), (e: Error) => e instanceof UserError && /^x\.yaml: unknown key 'model\.bsae'/.test(e.message));
    assert.throws(() => parseConfig({ model: { depth: 0 } }, 'x.yaml'), /x\.yaml: key 'model\.depth' has 0; Number must be greater than or equal to 1$/);
    assert.throws(() => parseConfig({ model: { name: 'segformer' } }, 'x.yaml'), /x\.yaml: key 'model\.name' has "segformer"; is not a registered model; registered: .*unet/);
    const c = parseConfig({ model: { depth: 3 } });
    assert.deepEqual([c.model.name, c.model.base, c.model.depth, c.model.up_mode, c.model.encoder_weights], ['unet', 16, 3, 'nearest', null]);
  },
  "the data section is checked by the chosen dataset's own schema"() {
    const c = parseConfig({ data: { name: 'folder', images_dir: 'img', masks_dir: 'lab' } });
    assert.deepEqual([c.data.images_dir, c.data.mask_suffix, 'synthetic' in c.data], ['img', '', false]);
    assert.throws(() => parseConfig({ data: { name: 'isic', synthetic: { train: 4 } } }, 'x.yaml'), /^UserError: x\.yaml: unknown key 'data\.synthetic' \(dataset 'isic' has no such option, dataset 'synthetic' has: remove it or set it to null; its options: none\)$/);
    assert.throws(() => parseConfig({ data: { name: 'folder', mask_sufix: '_m' } }, 'x.yaml'), /^UserError: x\.yaml: unknown key 'data\.mask_sufix' \(dataset 'folder' has no such option: check the spelling; its options: images_dir, masks_dir, mask_suffix, value_map\)$/);
    assert.throws(() => parseConfig({ data: { synthetic: { kind: 'shapes' } } }, 'x.yaml'), /^UserError: x\.yaml: key 'data\.synthetic\.kind' has "shapes"; one of lesion, multiclass$/);
    assert.throws(() => parseConfig({ data: { name: 'voc' } }, 'x.yaml'), /^UserError: x\.yaml: key 'data\.name' has "voc"; is not a registered dataset; registered: camvid, cityscapes, folder, isic, synthetic/);
    // A saved config of an earlier version carries every dataset's defaults; null unsets a base's key.
    assert.equal('synthetic' in parseConfig({ data: { name: 'isic', mask_suffix: '', synthetic: { kind: 'lesion', train: 240, val: 60, image_size: 128 } } }).data, false);
    assert.equal('synthetic' in parseConfig({ data: { name: 'isic', synthetic: null } }).data, false);
  },
  'defaults fill an empty config'() {
    const c = parseConfig({});
    assert.equal(c.model.name, 'unet');
    assert.equal(c.training.batch_size, 4);
    assert.equal(outChannels(c), 1);
  },
  'unknown key is one line naming it'() {
    assert.throws(() => parseConfig({ training: { epohcs: 3 } }, 'x.yaml'), (e: Error) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /unknown key 'training\.epohcs'/);
      assert.equal(e.message.split('\n').length, 1);
      return true;
    });
  },
  'null unsets an optional key a base config set; where a key takes no null it is refused by key'() {
    const base = { training: { iterations: 100, loss: { name: 'ce', ohem: { thresh: 0.7 } }, augmentations: { hflip: {}, crop: { size: [8, 8] } } } };
    const raw = structuredClone(base);
    for (const s of ['training.loss.ohem=null', 'training.augmentations.hflip=null', 'training.iterations=null']) applySet(raw, s);
    const c = parseConfig(raw);
    assert.deepEqual([c.training.loss.ohem, c.training.augmentations.hflip, c.training.iterations], [undefined, undefined, undefined]);
    assert.deepEqual(c.training.augmentations.crop?.size, [8, 8]);
    assert.equal((parseConfig(base).training.loss.ohem as { min_kept: number }).min_kept, 100000);
    assert.throws(() => parseConfig({ training: { batch_size: null } }, 'x.yaml'), /x\.yaml: key 'training\.batch_size' has null; expected number/);
  },
  'wrong type names key, value and expectation'() {
    assert.throws(() => parseConfig({ training: { batch_size: 'four' } }, 'x.yaml'), /key 'training\.batch_size' has "four"; expected number/);
    assert.throws(() => parseConfig({ backend: 'gpu' }), /key 'backend' has "gpu"; one of auto, tensorflow, webgpu, wasm, cpu/);
  },
  'non-finite numbers, an absurd learning rate and reversed ranges are refused by key'() {
    assert.throws(() => parseConfig({ training: { optimizer: { lr: Infinity } } }, 'x.yaml'), (e: Error) => /^x\.yaml: key 'training\.optimizer\.lr' has Infinity; Number must be finite$/.test(e.message));
    assert.throws(() => parseConfig({ training: { optimizer: { lr: 1e30 } } }, 'x.yaml'), /key 'training\.optimizer\.lr' has 1e\+30; Number must be less than or equal to 10/);
    assert.throws(() => parseConfig({ data: { mean: [0, -Infinity, 0] } }), /data\.mean\.1/);
    assert.throws(() => parseConfig({ training: { augmentations: { scale: { range: [1.25, 0.75] } } } }), /key 'training\.augmentations\.scale\.range' has \[1\.25,0\.75\]; expected \[low, high\] with low <= high/);
    assert.throws(() => parseConfig({ training: { augmentations: { scale: { range: [0, 1] } } } }), /scale\.range\.0/);
    assert.equal(parseConfig({ training: { augmentations: { scale: { range: [1, 1] } } } }).training.augmentations.scale!.range[1], 1);
  },
  async 'an empty file is refused; {} gives the defaults'() {
    const os = await import('node:os'); // the self-test's only user
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-'));
    fs.writeFileSync(path.join(dir, 'empty.yaml'), '# nothing yet\n');
    fs.writeFileSync(path.join(dir, 'braces.yaml'), '{}\n');
    assert.throws(() => loadConfig(path.join(dir, 'empty.yaml')), /empty\.yaml: the config is empty; start from configs\/demo\.yaml, or write \{\} to train on every default/);
    assert.equal(loadConfig(path.join(dir, 'braces.yaml')).training.batch_size, 4);
    fs.rmSync(dir, { recursive: true });
  },
  'a run name cannot leave or hide in its folders'() {
    for (const bad of ['..', '.', '.hidden', 'a/b', '../x', 'a\\b', '']) assert.throws(() => parseConfig({ name: bad }), /key 'name'/, bad);
    assert.equal(parseConfig({ name: 'run-1.v2_b' }).name, 'run-1.v2_b');
    assert.throws(() => parseConfig({ name: 'x'.repeat(300) }), /key 'name'.*at most 100 characters/);
  },
  '--set overrides are typed through the schema'() {
    const raw: any = { training: { epochs: 3 } };
    applySet(raw, 'training.epochs=7');
    applySet(raw, 'data.size=[64, 96]');
    applySet(raw, 'model.batch_norm=false');
    const c = parseConfig(raw);
    assert.equal(c.training.epochs, 7);
    assert.deepEqual(c.data.size, [64, 96]);
    assert.equal(c.model.batch_norm, false);
    const bad: any = {};
    applySet(bad, 'training.epochs=many');
    assert.throws(() => parseConfig(bad), /training\.epochs/);
  },
};

runIfMain(module, selfTest);
