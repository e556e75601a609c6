// Hostile and mistaken configs (issue 39): keys that would reach Object.prototype, inputs
// that never end or expand without bound, and messages that must name what to change.
// Each answer is one UserError line naming the file or key, quickly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { applySet } from '../utils/config';
import { loadConfig, parseConfig } from '../config/resolve';
import { readConfigFile } from '../utils/config_files';
import { resolveConfig } from '../api/options';
import { UserError } from '../utils/errors';
import { webServeHint } from '../utils/cli';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-hard-'));

/** `fn` throws one UserError line matching every pattern. */
function oneLine(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof UserError, `${e?.name}: ${e?.message}`);
    assert.equal(e.message.split('\n').length, 1, e.message);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

/**
 * Runs `code` (given `config`, `options` and `files` modules of dist) in a child node with a
 * time limit: an unbounded read or walk would block the test's own event loop for good.
 */
function inChild(code: string, timeoutMs = 20_000): { out: string; status: number | null; signal: string | null; ms: number } {
  const dist = path.resolve(__dirname, '..');
  const pre = `const config = require(${JSON.stringify(path.join(dist, 'config', 'resolve.js'))}); const options = require(${JSON.stringify(path.join(dist, 'api', 'options.js'))});`;
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['-e', `${pre}\ntry { ${code}; console.log('NO ERROR'); } catch (e) { console.log(e.name + ': ' + e.message); }`], { encoding: 'utf8', timeout: timeoutMs });
  return { out: (r.stdout + r.stderr).trim(), status: r.status, signal: r.signal, ms: Date.now() - t0 };
}

// --- class 4: keys that walk into the prototype ------------------------------------------

test('--set __proto__.x (and constructor/prototype) is refused by key and pollutes nothing', () => {
  try {
    for (const s of ['__proto__.polluted_a=1', 'training.__proto__.polluted_a=1', 'constructor.prototype.polluted_a=1', 'training.prototype=1']) {
      oneLine(() => applySet({}, s), new RegExp(`--set '${s.replace(/[.]/g, '\\.')}'`), /(__proto__|constructor|prototype)/);
      assert.equal(({} as any).polluted_a, undefined, s);
    }
    oneLine(() => applySet({}, 'training={__proto__: {polluted_a: 1}}'), /key 'training\.__proto__'/);
    oneLine(() => resolveConfig({}, { set: ['__proto__.polluted_a=1'] }), /__proto__/);
    assert.equal(({} as any).polluted_a, undefined);
  } finally {
    delete (Object.prototype as any).polluted_a;
  }
});

test('__proto__ keys in a YAML file, a base it extends and a library object are refused by key', () => {
  const dir = tmp();
  try {
    fs.writeFileSync(path.join(dir, 'base.yaml'), 'training: { __proto__: { polluted_b: 1 } }\n');
    fs.writeFileSync(path.join(dir, 'child.yaml'), 'extends: base.yaml\nname: child\n');
    fs.writeFileSync(path.join(dir, 'top.yaml'), '__proto__: { polluted_b: 1 }\n');
    oneLine(() => loadConfig(path.join(dir, 'child.yaml')), /base\.yaml: key 'training\.__proto__'/);
    oneLine(() => loadConfig(path.join(dir, 'top.yaml')), /top\.yaml: key '__proto__'/);
    oneLine(() => resolveConfig(JSON.parse('{"data": {"constructor": {"prototype": {"polluted_b": 1}}}}')), /config object: key 'data\.constructor'/);
    assert.equal(({} as any).polluted_b, undefined);
  } finally {
    delete (Object.prototype as any).polluted_b;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// --- class 5: unbounded inputs ------------------------------------------------------------

test('--config /dev/zero, a FIFO and extends: /dev/zero are refused at once, naming the file', () => {
  const dir = tmp();
  try {
    const r = inChild(`config.loadConfig('/dev/zero')`);
    assert.match(r.out, /^UserError: \/dev\/zero: not a regular file/, JSON.stringify(r));
    fs.writeFileSync(path.join(dir, 'z.yaml'), 'extends: /dev/zero\n');
    const e = inChild(`config.loadConfig(${JSON.stringify(path.join(dir, 'z.yaml'))})`);
    assert.match(e.out, /^UserError: \/dev\/zero: not a regular file .*\(extended by .*z\.yaml\)/, JSON.stringify(e));
    const fifo = path.join(dir, 'fifo.yaml');
    if (spawnSync('mkfifo', [fifo]).status === 0) {
      const f = inChild(`config.loadConfig(${JSON.stringify(fifo)})`);
      assert.match(f.out, /^UserError: .*fifo\.yaml: not a regular file/, JSON.stringify(f));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** A YAML flow value of 10^depth values in a few hundred bytes. */
function yamlBomb(depth = 9): string {
  const levels = ['&l0 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]'];
  for (let i = 1; i < depth; i++) levels.push(`&l${i} [${Array(10).fill(`*l${i - 1}`).join(', ')}]`);
  return `[${levels.join(', ')}]`;
}

test('an alias bomb through --set, and shared references or a cycle in a library object, are refused quickly by source', () => {
  const viaSet = inChild(`config.loadConfig(${JSON.stringify(path.resolve(__dirname, '..', '..', 'configs', 'demo.yaml'))}, [${JSON.stringify('gpus=' + yamlBomb())}])`);
  assert.match(viaSet.out, /^UserError: --set 'gpus=.*: expands to more than 100000 values/, JSON.stringify(viaSet));
  assert.ok(viaSet.ms < 10_000, `${viaSet.ms} ms`);
  const shared = inChild(`let a = [0,0,0,0,0,0,0,0,0,0]; for (let i = 0; i < 8; i++) a = Array(10).fill(a); options.resolveConfig({ gpus: a })`);
  assert.match(shared.out, /^UserError: config object: expands to more than 100000 values/, JSON.stringify(shared));
  assert.ok(shared.ms < 10_000, `${shared.ms} ms`);
  const cyc: any[] = [];
  cyc.push(cyc);
  oneLine(() => resolveConfig({ gpus: cyc }), /config object: key 'gpus\.0' refers back to a list or mapping that holds it/);
  const o: any = { p: 0.5 };
  o.self = o;
  oneLine(() => resolveConfig({ training: { augmentations: { hflip: o } } }), /config object: key 'training\.augmentations\.hflip\.self' refers back/);
});

// --- class 6 (config side): what the pipeline cannot do is refused at config time ---------

test('model.in_channels other than 3 is refused at config time, saying why', () => {
  oneLine(() => parseConfig({ model: { in_channels: 1 } }, 'x.yaml'), /x\.yaml: key 'model\.in_channels' has 1; .*3/);
  assert.equal(parseConfig({ model: { in_channels: 3 } }).model.in_channels, 3);
});

// --- class 7: messages that say what to do -----------------------------------------------

test('num_classes the 8-bit masks cannot hold is refused with advice the schema accepts', () => {
  oneLine(() => parseConfig({ data: { num_classes: 300 } }, 'x.yaml'), /x\.yaml: key 'data\.num_classes' has 300; .*at most 255/);
  const c = parseConfig({ data: { num_classes: 255 } });
  assert.equal(c.data.num_classes, 255);
});

test('extends naming a folder names the extends key and the file that has it', () => {
  const dir = tmp();
  try {
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(path.join(dir, 'c.yaml'), 'extends: sub\n');
    oneLine(() => readConfigFile(path.join(dir, 'c.yaml')), /c\.yaml: key 'extends' names .*sub, a folder; expected a YAML file/);
    assert.throws(() => readConfigFile(path.join(dir, 'c.yaml')), (e: Error) => !/--config/.test(e.message));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--set extends=FILE composes the config over FILE (resolved from the working folder)', () => {
  const dir = tmp();
  try {
    fs.writeFileSync(path.join(dir, 'base.yaml'), 'training: { epochs: 9, batch_size: 3 }\n');
    fs.writeFileSync(path.join(dir, 'other.yaml'), 'training: { epochs: 5 }\ndata: { size: [32, 32] }\n');
    fs.writeFileSync(path.join(dir, 'c.yaml'), 'extends: other.yaml\nname: c\ntraining: { batch_size: 2 }\n');
    const rel = path.relative(process.cwd(), path.join(dir, 'base.yaml'));
    const c = loadConfig(path.join(dir, 'c.yaml'), [`extends=${rel}`, 'training.epochs=4']);
    assert.deepEqual([c.name, c.training.epochs, c.training.batch_size, c.data.size], ['c', 4, 2, [128, 128]]);
    const none = loadConfig(path.join(dir, 'c.yaml'), ['extends=null']);
    assert.deepEqual([none.training.epochs, none.training.batch_size], [20, 2]);
    const lib = resolveConfig({ name: 'o' }, { set: [`extends=${rel}`] });
    assert.deepEqual([lib.name, lib.training.epochs, lib.training.batch_size], ['o', 9, 3]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a union, literal or enum key names the allowed values, not "Invalid input"', () => {
  oneLine(() => parseConfig({ model: { name: 'deeplabv3plus', output_stride: 8 } }, 'x.yaml'), /^x\.yaml: key 'model\.output_stride' has 8; one of 16, 32$/);
  oneLine(() => parseConfig({ model: { out_channels: 'x' } }, 'x.yaml'), /^x\.yaml: key 'model\.out_channels' has "x"; "auto" or a number$/);
  oneLine(() => parseConfig({ data: { normalize: 'x' } }, 'x.yaml'), /key 'data\.normalize' has "x"; one of dataset, image$/);
  oneLine(() => parseConfig({ evaluation: { tta: ['x'] } }, 'x.yaml'), /key 'evaluation\.tta\.0' has "x"; one of hflip, vflip, hvflip$/);
});

test('the export --web serve hint quotes the folder for a POSIX shell and binds 127.0.0.1', () => {
  const hint = webServeHint("results/it's here/export");
  assert.match(hint, /-d 'results\/it'\\''s here\/export' 8080/);
  assert.match(hint, /http\.server -b 127\.0\.0\.1 /); // not every interface
  assert.match(webServeHint('plain/dir'), /-d 'plain\/dir' 8080/);
});
