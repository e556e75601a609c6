// Every shipped config resolves to the same effective settings as the committed snapshot
// (test/fixtures/resolved/<name>.json, written from the code before the engine took resolved
// parts), so a refactor of config resolution cannot silently change what a config means.
// Regenerate after an intended change: SEMSEG_WRITE_SNAPSHOTS=1 node --test dist/test/config_equivalence.test.js
// The snapshots were written when every dataset's keys were common (each config carried
// data.mask_suffix and data.synthetic); now a dataset owns its keys, so the keys of datasets
// other than the config's (never read by its loader) are left out of the comparison.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, resolveRun } from '../config/resolve';
import { COMMON_MODEL_KEYS } from '../models/registry';
import { getDataset, registeredDatasets } from '../loaders/registry';
import { COMMON_DATA_KEYS, isBinary, outChannels } from '../utils/config';

const up = (...p: string[]) => [path.resolve(__dirname, '..', '..', ...p), path.resolve(__dirname, '..', ...p)].find((d) => fs.existsSync(d))!;
const configs = up('configs');
const snapshots = path.join(up('test', 'fixtures'), 'resolved');

/** JSON with object keys sorted at every level: the snapshot does not depend on key order. */
export function sortedJson(v: unknown): string {
  const sort = (x: unknown): unknown =>
    Array.isArray(x) ? x.map(sort)
    : x !== null && typeof x === 'object' ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, sort((x as Record<string, unknown>)[k])]))
    : x;
  return JSON.stringify(sort(v), null, 2) + '\n';
}

/**
 * A snapshot with its data section less the keys that only datasets other than its own
 * own (e.g. the folder loader's data.mask_suffix in the demo's): its loader never read them.
 */
function withoutOtherDatasetsKeys<T extends { config: { data: Record<string, unknown> } }>(snap: T): T {
  const data = { ...snap.config.data };
  const mine = Object.keys(getDataset(String(data.name)).options.shape);
  const others = registeredDatasets().flatMap((n) => Object.keys(getDataset(n).options.shape)).filter((k) => !mine.includes(k) && !COMMON_DATA_KEYS.includes(k));
  for (const k of others) delete data[k];
  return { ...snap, config: { ...snap.config, data } };
}

/** What a config means: the resolved config (every default filled) and what is derived from it. */
function effective(file: string): unknown {
  const cfg = loadConfig(path.join(configs, file));
  return { config: cfg, derived: { out_channels: outChannels(cfg), binary: isBinary(cfg) } };
}

for (const file of fs.readdirSync(configs).filter((f) => f.endsWith('.yaml')).sort()) {
  const name = path.basename(file, '.yaml');
  test(`configs/${file} resolves to test/fixtures/resolved/${name}.json`, () => {
    const got = sortedJson(effective(file));
    const snap = path.join(snapshots, `${name}.json`);
    if (process.env.SEMSEG_WRITE_SNAPSHOTS === '1') fs.writeFileSync(snap, got);
    assert.ok(fs.existsSync(snap), `no snapshot ${snap}`);
    assert.equal(got, sortedJson(withoutOtherDatasetsKeys(JSON.parse(fs.readFileSync(snap, 'utf8')))));
  });
}

// The parts the engine builds from (resolveRun) carry exactly the options the snapshot
// records for them: the engine sees what the config meant before it took resolved parts.
for (const file of fs.readdirSync(configs).filter((f) => f.endsWith('.yaml')).sort()) {
  const name = path.basename(file, '.yaml');
  test(`configs/${file}: resolveRun's parts hold the snapshot's options`, () => {
    const { config: snap, derived } = withoutOtherDatasetsKeys(JSON.parse(fs.readFileSync(path.join(snapshots, `${name}.json`), 'utf8')));
    const r = resolveRun(loadConfig(path.join(configs, file)));
    const pick = (section: Record<string, unknown>, keys: string[]) => Object.fromEntries(keys.filter((k) => section[k] !== undefined).map((k) => [k, section[k]]));
    const own = (section: Record<string, unknown>, common: readonly string[]) => pick(section, Object.keys(section).filter((k) => !common.includes(k)));
    assert.equal(r.model.definition.name, snap.model.name);
    assert.equal(sortedJson(r.model.options), sortedJson(own(snap.model, COMMON_MODEL_KEYS)));
    assert.deepEqual(r.model.io, { inChannels: snap.model.in_channels, outChannels: derived.out_channels, seed: snap.training.seed });
    assert.equal(r.dataset.definition.name, snap.data.name);
    assert.equal(sortedJson(r.dataset.options), sortedJson(own(snap.data, COMMON_DATA_KEYS)));
    const loss = snap.training.loss;
    assert.deepEqual(r.loss.parts.map((p) => p.definition.name), loss.name.split('+').map((n: string) => n.trim().toLowerCase()));
    for (const p of r.loss.parts) assert.equal(sortedJson(p.options), sortedJson(pick(loss, Object.keys(p.definition.options.shape))));
    assert.deepEqual([r.loss.weights, r.loss.classWeights, r.loss.numClasses, r.loss.ignoreIndex], [loss.weights, loss.class_weights, snap.data.num_classes, snap.data.ignore_index]);
    const opt = snap.training.optimizer;
    assert.equal(r.optimizer.definition.name, opt.name);
    assert.equal(sortedJson(r.optimizer.options), sortedJson(own(opt, ['name', 'lr', 'weight_decay', 'lr_mult'])));
    assert.deepEqual([r.optimizer.common.lr, r.optimizer.common.weight_decay, r.optimizer.common.lr_mult, r.optimizer.gradClip], [opt.lr, opt.weight_decay, opt.lr_mult, snap.training.grad_clip]);
    const sch = snap.training.lr_schedule;
    assert.equal(r.schedule.definition.name, sch.name);
    assert.equal(sortedJson(r.schedule.options), sortedJson(own(sch, ['name', 'warmup_iters', 'warmup_ratio'])));
    assert.deepEqual([r.schedule.warmupIters, r.schedule.warmupRatio], [sch.warmup_iters, sch.warmup_ratio]);
  });
}

test('the README\'s configs have snapshots', () => {
  for (const name of ['demo', 'isic', 'camvid', 'cityscapes']) assert.ok(fs.existsSync(path.join(snapshots, `${name}.json`)), name);
});
