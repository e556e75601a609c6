// Every shipped config resolves to the same effective settings as the committed snapshot
// (test/fixtures/resolved/<name>.json, written from the code before the engine took resolved
// parts), so a refactor of config resolution cannot silently change what a config means.
// Regenerate after an intended change: SEMSEG_WRITE_SNAPSHOTS=1 node --test dist/test/config_equivalence.test.js
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../config/resolve';
import { isBinary, outChannels } from '../utils/config';

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
    assert.equal(got, fs.readFileSync(snap, 'utf8'));
  });
}

test('the README\'s configs have snapshots', () => {
  for (const name of ['demo', 'isic', 'camvid', 'cityscapes']) assert.ok(fs.existsSync(path.join(snapshots, `${name}.json`)), name);
});
