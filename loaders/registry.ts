// Datasets by name, like MMSegmentation's DATASETS registry. A dataset is declared once,
// in loaders/<name>.ts: its own options (a zod schema for its keys of the `data:` section,
// beside the common ones), its file layout (listPairs), how raw mask values become class ids
// (maskLut) and its metainfo (classes, palette, post-processing, submission format, from
// utils/dataset_utils/<name>.ts). `data.name: X` loads loaders/X.ts on first use, so a
// new dataset needs no list or switch edited here.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { Config } from '../utils/config';
import { COMMON_DATA_KEYS, parseSchema } from '../utils/config';
import type { DatasetMeta } from '../utils/dataset_utils';
import { UserError } from '../utils/errors';
import { FolderRegistry } from '../utils/folder_registry';
import { runIfMain, SelfTest } from '../utils/self_test';

export interface PairRef { id: string; image: string; mask: string }

/** raw mask value (index) -> class id, ignore index, or -1 for "not a known value". */
export type MaskLut = Int16Array;

// Each method gets the config (the common keys: root, num_classes, ...) and the dataset's
// own options, parsed by its schema.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export interface DatasetDefinition<S extends z.ZodObject<any> = z.ZodObject<any>> {
  name: string;
  /** The dataset's own keys under `data:` with their defaults (beside COMMON_DATA_KEYS). */
  options: S;
  /** The dataset's class count, checked against data.num_classes before anything is read. */
  numClasses?: number | ((cfg: Config, o: z.infer<S>) => number);
  /** Metainfo: class names, palette, post-processing, submission format. */
  meta(cfg: Config, o: z.infer<S>): DatasetMeta;
  listPairs(cfg: Config, split: string, o: z.infer<S>): Promise<PairRef[]> | PairRef[];
  /** Defaults to identityLut: values 0..num_classes-1 and the ignore index are valid. */
  maskLut?(cfg: Config, o: z.infer<S>): MaskLut;
}

// Datasets by file name in this folder; these files are not datasets.
const datasets = new FolderRegistry<DatasetDefinition>(__dirname, new Set(['registry', 'files', 'fixtures']), (name, known) => `data.name '${name}' is not a registered dataset; registered: ${known.join(', ')}`);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function registerDataset<S extends z.ZodObject<any>>(d: DatasetDefinition<S>): DatasetDefinition<S> {
  datasets.register(d as unknown as DatasetDefinition);
  return d;
}

/** Names of the datasets in this folder (and any registered from elsewhere). */
export function registeredDatasets(): string[] {
  return datasets.names();
}

export function getDataset(name: string): DatasetDefinition {
  return datasets.get(name);
}

/** The configured dataset: its definition and its own options parsed by its schema. */
export interface ResolvedDataset {
  definition: DatasetDefinition;
  options: Record<string, unknown>;
}

/**
 * The dataset of a config validated by config/resolve.ts: derived once (config/resolve.ts
 * resolveRun) for the engine; the functions below derive it from `cfg` when not given
 * (tests, direct library use). Keys of other datasets are not its options: left out.
 */
export function resolveDataset(cfg: Config): ResolvedDataset {
  const definition = getDataset(cfg.data.name);
  const data = cfg.data as Record<string, unknown>;
  const own = Object.keys(definition.options.shape).filter((k) => !COMMON_DATA_KEYS.includes(k) && data[k] !== undefined && data[k] !== null);
  return { definition, options: definition.options.parse(Object.fromEntries(own.map((k) => [k, data[k]]))) };
}

/** The dataset's metainfo for this config (class names and palette, for reports and exports). */
export function datasetMeta(cfg: Config, ds: ResolvedDataset = resolveDataset(cfg)): DatasetMeta {
  return ds.definition.meta(cfg, ds.options);
}

/** Throws the one-line error when data.num_classes disagrees with the dataset's class count. */
export function checkNumClasses(cfg: Config, ds: ResolvedDataset = resolveDataset(cfg)): void {
  const d = ds.definition;
  const n = typeof d.numClasses === 'function' ? d.numClasses(cfg, ds.options) : d.numClasses;
  if (n !== undefined && cfg.data.num_classes !== n)
    throw new UserError(`dataset '${cfg.data.name}' has ${n} classes but data.num_classes is ${cfg.data.num_classes}; set data.num_classes: ${n}`);
}

/** The split a leave-group-out run validates on (data.group_by, data.holdout_groups). */
export const HOLDOUT_SPLIT = 'holdout';

/** The group of each pair (data.group_by's first capture group on its id). */
function groupOf(cfg: Config, p: PairRef): string {
  const m = new RegExp(cfg.data.group_by!).exec(p.id);
  if (!m || m[1] === undefined) throw new UserError(`data.group_by '${cfg.data.group_by}' does not match '${p.id}' (${p.image}); every id needs a group`);
  return m[1];
}

/**
 * data.train_split without the held-out groups, or (split 'holdout') only them: a
 * validation split that shares no group (sequence, patient) with training.
 */
async function groupedPairs(cfg: Config, split: string, ds: ResolvedDataset): Promise<PairRef[] | null> {
  const { group_by: pattern, holdout_groups: held, train_split: train } = cfg.data;
  if (split !== HOLDOUT_SPLIT && (split !== train || !held.length)) return null;
  if (!pattern || !held.length) throw new UserError(`split '${HOLDOUT_SPLIT}' needs data.group_by (a pattern with a capture group) and data.holdout_groups`);
  const all = await ds.definition.listPairs(cfg, train, ds.options);
  const groups = new Set(all.map((p) => groupOf(cfg, p)));
  const missing = held.filter((g) => !groups.has(g));
  if (missing.length) throw new UserError(`data.holdout_groups ${missing.join(', ')}: no pair of split '${train}' is in that group; groups found: ${[...groups].sort().join(', ')}`);
  return all.filter((p) => held.includes(groupOf(cfg, p)) === (split === HOLDOUT_SPLIT));
}

/** The pairs of one split, sorted by id, capped at data.limit (0 = all). Empty -> UserError. */
export async function listSplit(cfg: Config, split: string, ds: ResolvedDataset = resolveDataset(cfg)): Promise<PairRef[]> {
  checkNumClasses(cfg, ds);
  let pairs = (await groupedPairs(cfg, split, ds)) ?? (await ds.definition.listPairs(cfg, split, ds.options));
  if (cfg.data.limit > 0) pairs = pairs.slice(0, cfg.data.limit);
  if (!pairs.length) throw new UserError(`dataset '${cfg.data.name}' at ${cfg.data.root}: split '${split}' has no image/mask pairs`);
  return pairs;
}

export function identityLut(cfg: Config): MaskLut {
  const lut = new Int16Array(256).fill(-1);
  for (let v = 0; v < Math.min(cfg.data.num_classes, 256); v++) lut[v] = v;
  lut[cfg.data.ignore_index] = cfg.data.ignore_index;
  return lut;
}

export function maskLutFor(cfg: Config, ds: ResolvedDataset = resolveDataset(cfg)): MaskLut {
  const d = ds.definition;
  return d.maskLut ? d.maskLut(cfg, ds.options) : identityLut(cfg);
}

export const selfTest: SelfTest = {
  'built-in datasets are found by file name, each with names and colours for every class'() {
    const want: Record<string, number> = { isic: 2, cityscapes: 19, camvid: 11, folder: 5, synthetic: 2 };
    assert.deepEqual(registeredDatasets().filter((n) => n in want), Object.keys(want).sort());
    for (const [name, k] of Object.entries(want)) {
      const meta = datasetMeta(parseSchema({ data: { name, num_classes: k } }));
      assert.equal(meta.classes.length, k, name);
      assert.equal(meta.palette.length, k, name);
    }
    const shapes = datasetMeta(parseSchema({ data: { name: 'synthetic', num_classes: 4, synthetic: { kind: 'multiclass' } } }));
    assert.equal(shapes.classes[3], 'triangle');
  },
  'unknown name lists the datasets; a registered one is found'() {
    registerDataset({ name: 'zz_test', options: z.object({}), meta: () => ({ classes: [], palette: [] }), listPairs: () => [] });
    assert.throws(() => getDataset('voc'), (e: Error) => e instanceof UserError && /^data\.name 'voc' is not a registered dataset; registered: camvid, cityscapes, folder, isic, synthetic, zz_test$/.test(e.message));
    assert.equal(getDataset('zz_test').name, 'zz_test');
    datasets.remove('zz_test');
    assert.throws(() => getDataset('registry'), /is not a registered dataset/);
  },
  'own options are parsed with their defaults; other datasets\' keys are not options'() {
    const ds = resolveDataset(parseSchema({ data: { name: 'synthetic', synthetic: { train: 4 }, mask_suffix: '_m' } }));
    assert.deepEqual([ds.definition.name, ds.options], ['synthetic', { synthetic: { kind: 'lesion', train: 4, val: 60, image_size: 128 } }]);
    assert.deepEqual(resolveDataset(parseSchema({ data: { name: 'folder' } })).options, { mask_suffix: '' });
  },
  'a fixed class count is checked'() {
    assert.throws(() => checkNumClasses(parseSchema({ data: { name: 'cityscapes' } })), /has 19 classes but data\.num_classes is 2; set data\.num_classes: 19/);
  },
  async 'group_by holds whole groups out of training as the holdout split'() {
    const os = await import('node:os');
    const root = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'grp-')), 'ds');
    const ids = ['0001TP_1', '0001TP_2', '0006R0_1', '0006R0_2', '0016E5_1'];
    registerDataset({ name: 'zz_grouped', options: z.object({}), meta: () => ({ classes: ['a', 'b'], palette: [[0, 0, 0], [1, 1, 1]] }), listPairs: () => ids.map((id) => ({ id, image: `${id}.png`, mask: `${id}_m.png` })) });
    try {
      const cfg = parseSchema({ data: { name: 'zz_grouped', root, group_by: '^([^_]+)_', holdout_groups: ['0006R0'], val_split: 'holdout' } });
      assert.deepEqual((await listSplit(cfg, 'train')).map((p) => p.id), ['0001TP_1', '0001TP_2', '0016E5_1']);
      assert.deepEqual((await listSplit(cfg, 'holdout')).map((p) => p.id), ['0006R0_1', '0006R0_2']);
      const typo = parseSchema({ data: { name: 'zz_grouped', root, group_by: '^([^_]+)_', holdout_groups: ['0006RO'] } });
      await assert.rejects(listSplit(typo, 'train'), /data\.holdout_groups 0006RO: no pair of split 'train' is in that group; groups found: 0001TP, 0006R0, 0016E5/);
      const loose = parseSchema({ data: { name: 'zz_grouped', root, group_by: '^(\\d+)TP', holdout_groups: ['0001'] } });
      await assert.rejects(listSplit(loose, 'train'), /data\.group_by .* does not match '0006R0_1'/);
      await assert.rejects(listSplit(parseSchema({ data: { name: 'zz_grouped', root } }), 'holdout'), /split 'holdout' needs data\.group_by/);
      assert.throws(() => parseSchema({ data: { group_by: 'no-group' } }), /key 'data\.group_by' has "no-group"; expected a regular expression with a capture group/);
    } finally {
      datasets.remove('zz_grouped');
    }
  },
  async 'limit caps a split'() {
    const os = await import('node:os');
    const root = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'idx-')), 'ds');
    const cfg = parseSchema({ data: { root, limit: 2, synthetic: { train: 4, val: 2, image_size: 16 } } });
    assert.equal((await listSplit(cfg, 'train')).length, 2);
    fs.rmSync(path.dirname(root), { recursive: true });
  },
};

runIfMain(module, selfTest);
