// The library's arguments checked at the api/ boundary (issue 39, class 6): a config that is
// neither a path nor a plain object, options of the wrong type or name, and values no YAML
// file could hold are one UserError line naming the argument, before any backend starts or
// run begins; and the wasm backend leaves no listeners on the host's process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { train, evaluate, predict, loadModel, exportModel, resolveConfig } from '../api';
import { UserError } from '../utils/errors';

// Every config here also sets an invalid epoch count, so that a check that is missing
// ends in the schema's message (the assertion fails) instead of a 20-epoch run.
const STOP = ['training.epochs=0'];

async function refused(p: Promise<unknown>, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(p, (e: Error) => {
    assert.ok(e instanceof UserError, `${e?.name}: ${e?.message}`);
    assert.equal(e.message.split('\n').length, 1, e.message);
    for (const re of patterns) assert.match(e.message, re);
    return true;
  });
}

test('a config that is neither a path nor a plain object is refused, not read as {}', async () => {
  for (const bad of [123, null, [], undefined, true, new Date(0)]) {
    await refused(train(bad as any, { set: STOP, quiet: true }), /^train\(\): the config must be a YAML file path or a config object/);
  }
  await refused(evaluate(7 as any, { quiet: true }), /^evaluate\(\): the config must be/);
  assert.throws(() => resolveConfig([] as any), /the config must be a YAML file path or a config object/);
});

test('options of the wrong type, unknown options and missing ones are one line naming the option', async () => {
  await refused(train({}, { set: [5] as any, quiet: true }), /^train\(\): option 'set' must be a list of 'key\.path=value' strings/);
  await refused(train({}, { set: 'training.epochs=1' as any, quiet: true }), /option 'set' must be a list/);
  await refused(train({}, { set: STOP, weights: 5 as any, quiet: true }), /^train\(\): option 'weights' must be a string path; got 5$/);
  await refused(train({}, { set: STOP, resum: true, quiet: true } as any), /^train\(\): unknown option 'resum' \(options: .*resume/);
  await refused(train({}, { set: STOP, quiet: 'yes' as any }), /option 'quiet' must be true or false/);
  await refused(train({}, { set: STOP, backend: 'gpu' as any, quiet: true }), /option 'backend' must be one of auto, tensorflow, webgpu, wasm, cpu/);
  await refused(train({ training: { epochs: 0 } }, 5 as any), /^train\(\): the options must be an object/);
  await refused(evaluate({ backend: 'cpu' }, { checkpoint: 7 as any, quiet: true }), /^evaluate\(\): option 'checkpoint' must be a string path; got 7$/);
  await refused(evaluate({ backend: 'cpu' }, { threshold: 'high' as any, quiet: true }), /option 'threshold' must be a number from 0 to 1/);
  await refused((predict as any)({ backend: 'cpu' }), /^predict\(\): option 'input' is required: an image file or a folder of images/);
  await refused(predict({ backend: 'cpu' }, { input: 3 as any }), /^predict\(\): option 'input' must be a string path/);
  await refused(loadModel({ backend: 'cpu' }, { checkpoint: ['a'] as any }), /^loadModel\(\): option 'checkpoint' must be a string path/);
  await refused(exportModel({ backend: 'cpu' }, { web: 1 as any }), /^exportModel\(\): option 'web' must be true or false/);
});

test('functions, BigInts, symbols and class instances in a config object are refused by key path', async () => {
  await refused(train({ training: { epochs: () => 3 } } as any, { quiet: true }), /^config object: key 'training\.epochs' has a function; a config holds only/);
  await refused(train({ training: { epochs: 3n } } as any, { quiet: true }), /^config object: key 'training\.epochs' has a bigint/);
  await refused(train({ name: Symbol('x') } as any, { quiet: true }), /key 'name' has a symbol/);
  await refused(train({ data: { root: new Date(0) } } as any, { quiet: true }), /key 'data\.root' has a Date/);
  await refused(train({ data: { size: new Map() } } as any, { quiet: true }), /key 'data\.size' has a Map/);
});

test('the wasm backend leaves no process listeners behind; a host error after it is reported as the host\'s', () => {
  const dist = path.resolve(__dirname, '..');
  const host = `
    const { initBackend } = require(${JSON.stringify(path.join(dist, 'backends', 'index.js'))});
    const before = ['uncaughtException', 'unhandledRejection'].map((e) => process.listenerCount(e));
    initBackend('wasm').then(() => {
      const after = ['uncaughtException', 'unhandledRejection'].map((e) => process.listenerCount(e));
      console.log('listeners ' + JSON.stringify(before) + ' ' + JSON.stringify(after));
      setTimeout(() => { throw new Error('the host failed on its own'); }, 10);
    });`;
  const r = spawnSync(process.execPath, ['-e', host], { encoding: 'utf8', timeout: 120_000 });
  const out = r.stdout + r.stderr;
  assert.match(out, /listeners \[0,0\] \[0,0\]/, out);
  assert.equal(r.status, 1, out); // node's own exit code for an uncaught error (emscripten's glue made it 7)
  assert.match(r.stderr, /Error: the host failed on its own/);
  assert.ok(r.stderr.length < 4000, `stderr is ${r.stderr.length} characters: ${r.stderr.slice(0, 300)}`);
});

test('as a library: no signal handlers or exits unless asked, abortSignal stops and saves, warnings reach the caller and not a quiet console, errors in its terms', { timeout: 120_000 }, async () => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'library-host-'));
  const cfg = {
    name: 'host', backend: 'wasm' as const, model: { name: 'unet', base: 4, depth: 2 },
    data: { name: 'synthetic', root: path.join(dir, 'data'), size: [32, 32] as [number, number], synthetic: { train: 16, val: 8, image_size: 40 } },
    training: { epochs: 1, batch_size: 4, workers: 1 }, checkpoint: { ckpt_root: path.join(dir, 'ck') }, results: { root: path.join(dir, 'res') },
  };
  const installed: string[] = [];
  const on = process.on;
  const printed: string[] = [];
  const warn = console.warn;
  process.on = function (this: NodeJS.Process, ev: string | symbol, fn: (...a: any[]) => void) {
    if (ev === 'SIGINT' || ev === 'SIGTERM') installed.push(String(ev));
    return on.call(this, ev, fn);
  } as typeof process.on;
  console.warn = (...a: unknown[]) => void printed.push(a.join(' '));
  try {
    const ac = new AbortController();
    ac.abort(); // seen after the first step
    const run = await train(cfg, { quiet: true, abortSignal: ac.signal });
    assert.deepEqual([run.interrupted, run.stoppedBy, run.step], [true, 'abort', 1]);
    assert.ok(fs.existsSync(path.join(run.checkpoints.last, 'complete.json')), 'last/ saved');
    assert.deepEqual(installed, [], 'no signal handlers installed');
    // A second run of the same name: the advice names the library's options.
    await refused(train(cfg, { quiet: true }), /resume: true/, /set: \['name=\.\.\.'\]/, /overwrite: true/);
    await assert.rejects(train(cfg, { quiet: true }), (e: Error) => !/--/.test(e.message));
    // A warning (synthetic data has no test split): to onWarning and the result, not to a quiet console.
    const got: string[] = [];
    const ev = await evaluate(cfg, { quiet: true, split: 'test', checkpoint: run.checkpoints.last, onWarning: (l) => got.push(l) });
    assert.ok(got.some((l) => /no test split/.test(l)), got.join('\n'));
    assert.deepEqual(ev.warnings, got);
    assert.deepEqual(printed, [], 'quiet: nothing printed');
  } finally {
    process.on = on;
    console.warn = warn;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
