// A model.json someone was given reads only its own folder's shards, of the size its
// manifest needs (storage/model_files.ts): no `..`, absolute paths or symlinks out, no
// device or FIFO (which would hang), no model.json past 64 MiB, no weights past 2 GiB.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as tf from '../backends/tf';
import { modelFiles, readExportedWeights, readModelJson } from '../storage/model_files';
import { UserError } from '../utils/errors';
import { tmpDir } from './helpers/cli';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A tiny LayersModel saved as model.json + one shard in a fresh folder, beside a "secret" file. */
async function fixture(): Promise<{ dir: string; json: string; secret: string; model: Record<string, any> }> {
  const root = tmpDir('mfconf');
  dirs.push(root);
  const dir = path.join(root, 'model');
  fs.mkdirSync(dir);
  const m = tf.sequential({ layers: [tf.layers.dense({ units: 2, inputShape: [3] })] });
  let artifacts!: tf.io.ModelArtifacts;
  await m.save(tf.io.withSaveHandler(async (a) => ((artifacts = a), { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } })));
  m.dispose();
  for (const f of modelFiles(artifacts, {})) fs.writeFileSync(path.join(dir, f.name), f.data);
  const secret = path.join(root, 'secret.bin');
  fs.writeFileSync(secret, fs.readFileSync(path.join(dir, 'group1-shard1of1.bin'))); // exactly the size the manifest needs
  const json = path.join(dir, 'model.json');
  return { dir, json, secret, model: JSON.parse(fs.readFileSync(json, 'utf8')) };
}

function withPaths(f: { json: string; model: Record<string, any> }, paths: string[]): void {
  fs.writeFileSync(f.json, JSON.stringify({ ...f.model, weightsManifest: [{ ...f.model.weightsManifest[0], paths }] }));
}

async function refused(json: string, ...patterns: RegExp[]): Promise<string> {
  const err = await readExportedWeights(json).then(() => null, (e) => e);
  assert.ok(err instanceof UserError, `expected a UserError, got ${err && (err.stack ?? err)}`);
  assert.doesNotMatch(err.message, /\n/);
  for (const p of patterns) assert.match(err.message, p);
  return err.message;
}

/**
 * Loads in a child with a deadline: a read of /dev/zero or a FIFO blocks the event loop, so
 * only another process can notice the hang. Returns the child's one-line message.
 */
function loadInChild(json: string): { status: number | null; out: string } {
  const mod = path.join(__dirname, '..', 'storage', 'model_files.js');
  const code = `require(${JSON.stringify(mod)}).readExportedWeights(${JSON.stringify(json)}).then(() => console.log('loaded'), (e) => { console.log(e.name + ': ' + e.message); process.exit(3); });`;
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 20_000, maxBuffer: 1 << 20 });
  return { status: r.status, out: (r.stdout ?? '').trim().split('\n').pop() ?? '' };
}

test('a shard path climbing out with .., absolute, or through a symlink is refused in one line naming model.json and the shard', async () => {
  const f = await fixture();
  assert.equal((await readExportedWeights(f.json)).length, 2, 'the untouched model loads');
  withPaths(f, ['../secret.bin']);
  await refused(f.json, new RegExp(f.json.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), /"\.\.\/secret\.bin"/, /inside the model's folder/);
  withPaths(f, [f.secret]);
  await refused(f.json, /absolute path/, /secret\.bin/);
  fs.symlinkSync(f.secret, path.join(f.dir, 'link.bin'));
  withPaths(f, ['link.bin']);
  await refused(f.json, /"link\.bin"/, /outside/);
  // A symlink that stays inside the folder is fine.
  fs.symlinkSync('group1-shard1of1.bin', path.join(f.dir, 'alias.bin'));
  withPaths(f, ['alias.bin']);
  assert.equal((await readExportedWeights(f.json)).length, 2);
});

test('/dev/zero and a FIFO as shard or model.json are refused at once, not read forever', async () => {
  const f = await fixture();
  const fifo = path.join(f.dir, 'fifo.bin');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
  withPaths(f, ['fifo.bin']);
  let r = loadInChild(f.json);
  assert.equal(r.status, 3, `a FIFO shard: ${r.out || 'hung (killed after 20 s)'}`);
  assert.match(r.out, /^UserError: .*fifo\.bin.*not a regular file/);
  const other = path.join(path.dirname(f.dir), 'other');
  fs.mkdirSync(other);
  fs.symlinkSync('/dev/zero', path.join(other, 'model.json'));
  r = loadInChild(path.join(other, 'model.json'));
  assert.equal(r.status, 3, `model.json -> /dev/zero: ${r.out || 'hung (killed after 20 s)'}`);
  assert.match(r.out, /^UserError: .*model\.json: not a regular file/);
});

test('the shards must hold exactly what the manifest needs, at most 2 GiB; model.json at most 64 MiB', async () => {
  const f = await fixture();
  fs.appendFileSync(path.join(f.dir, 'group1-shard1of1.bin'), Buffer.alloc(4));
  await refused(f.json, /group1-shard1of1\.bin/, /limit/);
  const spec = f.model.weightsManifest[0].weights[0];
  fs.writeFileSync(f.json, JSON.stringify({ ...f.model, weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: [{ ...spec, shape: [40000, 40000] }] }] }));
  await refused(f.json, /needs 6400000000 bytes of weights, more than the 2147483648-byte limit/);
  fs.writeFileSync(f.json, JSON.stringify({ ...f.model, weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: [{ ...spec, shape: [-4, 1] }] }] }));
  await refused(f.json, /no valid shape and dtype/);
  const big = path.join(path.dirname(f.dir), 'big', 'model.json');
  fs.mkdirSync(path.dirname(big));
  fs.writeFileSync(big, '{}');
  fs.truncateSync(big, 64 * 1024 * 1024 + 1); // sparse: no disk used
  assert.throws(() => readModelJson(big), (e: Error) => e instanceof UserError && /model\.json: 67108865 bytes, more than the 67108864-byte limit/.test(e.message));
});
