// The config schema: one zod schema holds every key, its type and its default.
// Types used across the project are inferred from it (no hand-written copy).
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import yaml from 'js-yaml';
import { z } from 'zod';
import { UserError } from './errors';
import { runIfMain, SelfTest } from './self_test';
import { checkConfigValue, checkKey, composeConfig, readConfigFile } from './config_files';
import assert from 'node:assert/strict';

// Every number is .finite(): YAML reads `.inf` as Infinity, which z.number() accepts.
const prob = z.number().finite().min(0).max(1);
// A [low, high] range to draw from: low first (a reversed range would draw outside
// what was meant), both positive (a scale of 0 is an empty image).
const range = z
  .tuple([z.number().finite().positive(), z.number().finite().positive()])
  .refine(([lo, hi]) => lo <= hi, 'expected [low, high] with low <= high');
const size2 = z.tuple([z.number().finite().int().positive(), z.number().finite().int().positive()]);

const classList = z.array(z.number().finite().int().min(0).max(254)).nonempty();

// An optional key; null (in a config or `--set key=null`) unsets one that a config it
// extends has set, as MMSegmentation's `_delete_`: e.g. `--set training.loss.ohem=null`.
export const unsettable = <T extends z.ZodTypeAny>(schema: T) => z.preprocess((v) => (v === null ? undefined : v), schema.optional());

// Each augmentation is off unless its section is present. `p` is the chance it
// is applied to a sample. Geometric ones move image and mask together;
// photometric ones touch the image only.
const AugmentationsSchema = z
  .object({
    scale: unsettable(z.object({ p: prob.default(1), range: range.default([0.75, 1.25]) }).strict()),
    crop: unsettable(
      z
        .object({
          size: size2,
          cat_max_ratio: z.number().finite().min(0).max(1).default(1),
          // With chance p, centre the crop window near a pixel of one of `classes` present in the
          // sample (drawn uniformly among them), so rare small classes are seen more often.
          focus: unsettable(z.object({ p: prob.default(0.5), classes: classList }).strict()),
        })
        .strict(),
    ),
    // With chance p, the pixels of `classes` in another training image (after its own scale,
    // crop and flips, its window on one of them as crop.focus places it) are pasted over the
    // sample before the photometric steps, so rare classes are seen in more scenes
    // (copy-paste, Ghiasi et al. 2021; ClassMix pastes the same way).
    paste: unsettable(z.object({ p: prob.default(0.5), classes: classList }).strict()),
    hflip: unsettable(z.object({ p: prob.default(0.5) }).strict()),
    vflip: unsettable(z.object({ p: prob.default(0.5) }).strict()),
    rotate: unsettable(z.object({ p: prob.default(0.5), degrees: z.number().finite().min(0).max(180).default(30) }).strict()),
    brightness: unsettable(z.object({ p: prob.default(0.5), range: z.number().finite().min(0).max(1).default(0.2) }).strict()),
    contrast: unsettable(z.object({ p: prob.default(0.5), range: z.number().finite().min(0).max(1).default(0.2) }).strict()),
    saturation: unsettable(z.object({ p: prob.default(0.5), range: z.number().finite().min(0).max(1).default(0.2) }).strict()),
    hue: unsettable(z.object({ p: prob.default(0.5), range: z.number().finite().min(0).max(0.5).default(0.05) }).strict()),
    noise: unsettable(z.object({ p: prob.default(0.3), std: z.number().finite().min(0).default(0.03) }).strict()),
  })
  .strict();

// The keys every model has; the chosen model's own keys (models/<name>.ts `options`)
// are checked against its schema in config/resolve.ts, so a typo is named as for any key.
const ModelSchema = z
  .object({
    name: z.string().default('unet'),
    // The loaders and the pipeline decode every image to RGB, so a model of other input channels
    // would fail at its first step; the key stays so that exports record it.
    in_channels: z.number().finite().int().positive().refine((c) => c === 3, 'images are read as RGB: only 3 is supported').default(3),
    // 'auto': 1 sigmoid output for two classes, else one softmax output per class.
    out_channels: z.union([z.literal('auto'), z.number().finite().int().positive()]).default('auto'),
    // Start from these weights where layer names and shapes match (a checkpoint folder or
    // an exported model.json), e.g. an encoder trained elsewhere; `imagenet`: ImageNet
    // weights for model.encoder mobilenet_v2 (models/encoders/imagenet.ts).
    encoder_weights: z.string().nullable().default(null),
  })
  .passthrough();

// The keys every dataset has; the chosen dataset's own keys (loaders/<name>.ts `options`,
// e.g. the folder loader's images_dir) sit beside them in `data:` and are checked against its
// schema in config/resolve.ts, so a typo is named as for any key.
const DataSchema = z
  .object({
    name: z.string().default('synthetic'),
    root: z.string().default('data/synthetic'),
    // Masks hold 8-bit class ids (0-255), one value of which data.ignore_index needs.
    num_classes: z.number().finite().int().min(2).max(255, 'at most 255: masks hold 8-bit class ids (0-255), and data.ignore_index needs one of them').default(2),
    ignore_index: z.number().finite().int().min(0).max(255).default(255),
    train_split: z.string().default('train'),
    val_split: z.string().default('val'),
    test_split: z.string().default('test'),
    // Network input [height, width]: every sample is resized to this (unless a crop
    // augmentation sets the training size), validation images too.
    size: size2.default([128, 128]),
    mean: z.tuple([z.number().finite(), z.number().finite(), z.number().finite()]).default([0.485, 0.456, 0.406]),
    std: z.tuple([z.number().finite().positive(), z.number().finite().positive(), z.number().finite().positive()]).default([0.229, 0.224, 0.225]),
    // 'image': each image is standardised by its own mean and standard deviation (over all
    // pixels and channels) instead of data.mean/std, so a sequence shot brighter or darker
    // than any training image reaches the network at the same level (CamVid's do).
    normalize: z.enum(['dataset', 'image']).default('dataset'),
    // Cap on pairs per split (0 = all); handy for quick runs.
    limit: z.number().finite().int().min(0).default(0),
    // Leave-group-out validation for grouped data (video sequences, patients): the group of a
    // pair is the first capture group of this pattern on its id; the groups in holdout_groups
    // leave data.train_split and form the split named 'holdout' (set data.val_split: holdout).
    group_by: z
      .string()
      .refine((p) => { try { return new RegExp(p).source.includes('('); } catch { return false; } }, 'expected a regular expression with a capture group, e.g. "^([^_]+)_"')
      .nullable()
      .default(null),
    holdout_groups: z.array(z.string()).default([]),
  })
  .passthrough();

/** The `data:` keys every dataset has; the rest belong to the chosen dataset's schema. */
export const COMMON_DATA_KEYS: readonly string[] = Object.keys(DataSchema.shape);

// The keys every loss, optimizer and schedule has; the named part's own keys (declared
// in training/losses/<name>.ts, training/optimizers/<name>.ts, training/schedules/<name>.ts)
// pass through here and are checked by its schema in config/resolve.ts, so a typo is named as
// for any key.
const LossSchema = z
  .object({
    name: z.string().default('bce+dice'),
    weights: unsettable(z.array(z.number().finite().min(0))),
    class_weights: unsettable(z.array(z.number().finite().min(0))),
  })
  .passthrough();

const OptimizerSchema = z
  .object({
    name: z.string().default('adam'),
    // Above 10 no optimizer here converges (Adam steps are ~lr per weight; SGD's with
    // unit gradients too): such a value is a typo (1e3 for 1e-3) that would only save Inf weights.
    lr: z.number().finite().positive().max(10).default(1e-3),
    weight_decay: z.number().finite().min(0).default(0),
    // Learning-rate multipliers by weight name, as MMSegmentation's paramwise custom_keys: the
    // longest key contained in a weight's name applies (e.g. {enc_: 0.1} moves a pretrained
    // encoder ten times slower than the decoder learning from scratch); the rest get 1.
    lr_mult: z.record(z.string().min(1), z.number().finite().min(0).max(10)).default({}),
  })
  .passthrough();

const ScheduleSchema = z
  .object({
    name: z.string().default('poly'),
    warmup_iters: z.number().finite().int().min(0).default(0),
    warmup_ratio: z.number().finite().min(0).max(1).default(0.1),
  })
  .passthrough();

const TrainingSchema = z
  .object({
    epochs: z.number().finite().int().positive().default(20),
    // When set, training stops after this many iterations (steps) instead.
    iterations: unsettable(z.number().finite().int().positive()),
    batch_size: z.number().finite().int().positive().default(4),
    workers: z.number().finite().int().positive().default(2),
    seed: z.number().finite().int().default(42),
    loss: LossSchema.default({}),
    optimizer: OptimizerSchema.default({}),
    lr_schedule: ScheduleSchema.default({}),
    grad_clip: unsettable(z.number().finite().positive()),
    augmentations: AugmentationsSchema.default({}),
    val_interval: z.number().finite().int().positive().default(1), // epochs
    print_interval: z.number().finite().int().positive().default(10), // steps
    threshold: z.number().finite().min(0).max(1).default(0.5),
    // Stop after this many seconds of training (0 = no limit); the run still validates and saves.
    time_limit: z.number().finite().min(0).default(0),
  })
  .strict();

const CheckpointSchema = z
  .object({
    ckpt_root: z.string().default('checkpoints'),
    save_interval: z.number().finite().int().positive().default(1), // epochs
    save_every_iters: z.number().finite().int().min(0).default(0), // 0 = only at epoch ends
    best_metric: z.string().default('val.mIoU'),
    // Start from these weights (a checkpoint folder or an exported model.json); --weights overrides it.
    weights: z.string().nullable().default(null),
  })
  .strict();

// How evaluate, predict and the end-of-training report run the model.
const EvaluationSchema = z
  .object({
    // Average the predictions of these flipped copies in (test-time augmentation).
    tta: z.array(z.enum(['hflip', 'vflip', 'hvflip'])).default([]),
    // ...and at these input scales (x data.size), resized back before averaging.
    scales: z.array(z.number().finite().positive().max(4)).nonempty().default([1]),
    // Score at each mask's own size (probabilities resized bilinearly); false: at data.size.
    full_resolution: z.boolean().default(true),
    // Apply the dataset's post-processing (ISIC: largest lesion, holes filled) before scoring.
    postprocess: z.boolean().default(false),
  })
  .strict();

const ResultsSchema = z
  .object({
    root: z.string().default('results'),
    save_predictions: z.boolean().default(true),
    gallery_size: z.number().finite().int().min(0).default(24),
  })
  .strict();

export const ConfigSchema = z
  .object({
    // A folder name under ckpt_root and results.root: '..' or '.x' must not escape or hide there.
    // 100 characters: room for suffixes (`.old`, temporaries) within a file system's 255.
    name: z.string().regex(/^[\w-][\w.-]*$/, 'letters, digits, _ . - only, not starting with a dot').max(100, 'at most 100 characters').default('run'),
    backend: z.enum(['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu']).default('auto'),
    gpus: z.array(z.number().finite().int().min(0)).default([]),
    model: ModelSchema.default({}),
    data: DataSchema.default({}),
    training: TrainingSchema.default({}),
    checkpoint: CheckpointSchema.default({}),
    evaluation: EvaluationSchema.default({}),
    results: ResultsSchema.default({}),
  })
  .strict();

export type Config = z.infer<typeof ConfigSchema>;
export type Augmentations = z.infer<typeof AugmentationsSchema>;
export type OptimizerConfig = z.infer<typeof OptimizerSchema>;
export type ScheduleConfig = z.infer<typeof ScheduleSchema>;

/** Number of network outputs: 1 (sigmoid) for binary by default, else one per class. */
export function outChannels(cfg: Config): number {
  const o = cfg.model.out_channels;
  if (o !== 'auto') return o;
  return cfg.data.num_classes === 2 ? 1 : cfg.data.num_classes;
}

/** Two classes: scored by foreground Dice/IoU, predicted through a threshold. */
export function isBinary(cfg: Config): boolean {
  return cfg.data.num_classes === 2;
}

export function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v); // JSON would say null
  const s = JSON.stringify(v);
  return s.length > 60 ? s.slice(0, 57) + '...' : s;
}

function valueAt(obj: unknown, keys: (string | number)[]): unknown {
  let cur: any = obj;
  for (const k of keys) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = cur[k];
  }
  return cur;
}

/**
 * What a union accepts, from what each member expected (zod says only "Invalid input"):
 * literals as "one of 16, 32", else e.g. '"auto" or a number'.
 */
function unionAllowed(iss: z.ZodInvalidUnionIssue): string {
  const firsts = iss.unionErrors.map((e) => e.issues.find((i) => i.path.join('.') === iss.path.join('.')) ?? e.issues[0]);
  if (firsts.every((i) => i?.code === 'invalid_literal')) return `one of ${firsts.map((i) => String((i as z.ZodInvalidLiteralIssue).expected)).join(', ')}`;
  const each = firsts.map((i) =>
    !i ? 'something else'
    : i.code === 'invalid_literal' ? show(i.expected)
    : i.code === 'invalid_type' ? `a ${i.expected}`
    : i.code === 'invalid_enum_value' ? `one of ${i.options.join(', ')}`
    : i.message,
  );
  return [...new Set(each)].join(' or ');
}

/** One line per problem: key path, value found, what is allowed. */
export function formatIssues(source: string, raw: unknown, issues: z.ZodIssue[]): string {
  // One line per key: Infinity fails both .finite() and .max(); the first says it.
  const seen = new Set<string>();
  const firstPerKey = issues.filter((iss) => iss.code === 'unrecognized_keys' || (!seen.has(iss.path.join('.')) && seen.add(iss.path.join('.'))));
  const lines = firstPerKey.map((iss) => {
    if (iss.code === 'unrecognized_keys') {
      const at = iss.path.length ? iss.path.join('.') + '.' : '';
      return `${source}: unknown key ${iss.keys.map((k) => `'${at}${k}'`).join(', ')} (check the spelling; see README "Configuration")`;
    }
    const key = iss.path.join('.') || '(top level)';
    const found = show(valueAt(raw, iss.path));
    let allowed = iss.message;
    if (iss.code === 'invalid_enum_value') allowed = `one of ${iss.options.join(', ')}`;
    else if (iss.code === 'invalid_type') allowed = `expected ${iss.expected}`;
    else if (iss.code === 'invalid_literal') allowed = `expected ${show(iss.expected)}`;
    else if (iss.code === 'invalid_union') allowed = unionAllowed(iss);
    return `${source}: key '${key}' has ${found}; ${allowed}`;
  });
  return lines.join('\n');
}

/** Parses `key.path=value`; the value is read as YAML so numbers, booleans and lists get their types. */
export function applySet(obj: Record<string, any>, assignment: string): void {
  const eq = assignment.indexOf('=');
  if (eq <= 0) throw new UserError(`--set '${assignment}': expected key.path=value`);
  const source = `--set '${assignment.length > 80 ? assignment.slice(0, 77) + '...' : assignment}'`;
  const keys = assignment.slice(0, eq).trim().split('.');
  // `__proto__.x=1` would otherwise walk into Object.prototype and set x on every object.
  checkKey(keys.join('.'), source);
  let value: unknown;
  try {
    value = yaml.load(assignment.slice(eq + 1));
  } catch {
    value = assignment.slice(eq + 1);
  }
  checkConfigValue(value, source, keys); // a flow value can hold an alias bomb, or a __proto__ key
  let cur = obj;
  for (const k of keys.slice(0, -1)) {
    // Own keys only: an inherited one (toString, ...) is no section of the config.
    if (!Object.hasOwn(cur, k) || cur[k] === undefined || cur[k] === null) cur[k] = {};
    if (typeof cur[k] !== 'object') throw new UserError(`--set '${assignment}': '${k}' is not a section`);
    cur = cur[k];
  }
  cur[keys[keys.length - 1]] = value === undefined ? null : value;
}

/**
 * The config checked by the schema alone: every common key typed and defaulted; the keys of
 * the named model, dataset, loss, optimizer and schedule are left for config/resolve.ts, which knows
 * the registries (this file sits below them).
 */
export function parseSchema(raw: unknown, source = 'config'): Config {
  checkConfigValue(raw, source); // bounded, acyclic and plain before zod and the messages walk it
  const res = ConfigSchema.safeParse(raw ?? {});
  if (!res.success) throw new UserError(formatIssues(source, raw, res.error.issues));
  const cfg = res.data;
  const aug = cfg.training.augmentations;
  for (const [key, classes] of [['crop.focus', aug.crop?.focus?.classes], ['paste', aug.paste?.classes]] as const) {
    const bad = (classes ?? []).find((c) => c >= cfg.data.num_classes || c === cfg.data.ignore_index);
    if (bad !== undefined) {
      throw new UserError(`${source}: key 'training.augmentations.${key}.classes' has ${bad}; expected class indices below data.num_classes (${cfg.data.num_classes}), not the ignore index`);
    }
  }
  return cfg;
}

/**
 * A YAML config (and the configs it `extends:`) with the `--set` overrides applied, not yet
 * validated (config/resolve.ts loadConfig validates it); errors are UserErrors.
 */
export function readConfig(file: string, sets: string[] = []): Record<string, any> {
  const own = () => readConfigFile(file, [], false);
  return applySets(() => readConfigFile(file), sets, own, path.dirname(path.resolve(file)), file, [path.resolve(file)]);
}

/** Whether a --set assigns the `extends` key. */
const setsExtends = (s: string) => s.slice(0, s.indexOf('=')).trim() === 'extends';

/**
 * The overrides applied to a config: after its `extends:` are merged (`composed`), or, when
 * one of them sets `extends` (which replaces the config's own, resolved from the working
 * folder as the command line's other paths), to the config itself (`own`, bases unread),
 * merged over its new bases after.
 */
export function applySets(composed: () => Record<string, any>, sets: string[], own: () => Record<string, any>, dir: string, source: string, chain: string[] = []): Record<string, any> {
  if (!sets.some(setsExtends)) {
    const raw = composed();
    for (const s of sets) applySet(raw, s);
    return raw;
  }
  const raw = own();
  for (const s of sets) applySet(raw, s);
  const ext = raw.extends;
  if (typeof ext === 'string') raw.extends = path.resolve(ext);
  else if (Array.isArray(ext)) raw.extends = ext.map((e) => (typeof e === 'string' ? path.resolve(e) : e));
  return composeConfig(raw, dir, source, chain);
}

export function dumpConfig(cfg: Config): string {
  return yaml.dump(cfg, { lineWidth: 120, noRefs: true });
}

export const selfTest: SelfTest = {
  'defaults fill an empty config; the named parts\' own keys are left for config/resolve.ts'() {
    const c = parseSchema({ model: { depth: 3 } });
    assert.deepEqual([c.model.name, c.training.batch_size, outChannels(c), c.model.depth, c.model.base], ['unet', 4, 1, 3, undefined]);
  },
  'unknown key is one line naming it'() {
    assert.throws(() => parseSchema({ training: { epohcs: 3 } }, 'x.yaml'), (e: Error) => e instanceof UserError && /^x\.yaml: unknown key 'training\.epohcs'/.test(e.message) && e.message.split('\n').length === 1);
  },
  '--set values are read as YAML; a key path into a value is refused'() {
    const raw: any = {};
    applySet(raw, 'data.size=[64, 96]');
    applySet(raw, 'training.loss.ohem=null');
    assert.deepEqual(raw, { data: { size: [64, 96] }, training: { loss: { ohem: null } } });
    assert.throws(() => applySet({ data: { size: 3 } }, 'data.size.x=1'), /'size' is not a section/);
  },
  async 'readConfig refuses an empty file'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-'));
    fs.writeFileSync(path.join(dir, 'empty.yaml'), '# nothing yet\n');
    assert.throws(() => readConfig(path.join(dir, 'empty.yaml')), /empty\.yaml: the config is empty/);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
