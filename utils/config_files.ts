// Reading config files: one YAML file, refused in one line when it is not a config, and
// composition as MMSegmentation's `_base_` does it: `extends: base.yaml` (or a list,
// later ones winning) merges this file's keys over its bases, so a config per
// architecture is a few lines over its dataset's config.
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import yaml from 'js-yaml';
import assert from 'node:assert/strict';
import { UserError } from './errors';
import { runIfMain, SelfTest } from './self_test';

const CONFIG_MAX_BYTES = 1 << 20;
const CONFIG_MAX_VALUES = 100_000;

type Raw = Record<string, unknown>;

// Keys that, assigned with `obj[k] = v`, reach Object.prototype (or a constructor's) and so
// every object of the host process.
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
const CONFIG_MAX_DEPTH = 64;

/** One line refusing `key` (a path) when it is one of the prototype keys; `source` names where it came from. */
export function checkKey(key: string, source: string): void {
  const bad = key.split('.').find((k) => FORBIDDEN_KEYS.has(k));
  if (bad !== undefined) throw new UserError(`${source}: key '${key}' is not allowed: '${bad}' would reach the prototype of every object`);
}

/**
 * Refuses, in one line naming `source` and the key path, what a config must not hold before
 * anything walks it: more than `limit` values counting each shared reference (YAML alias)
 * every time it appears, stopping there (a few hundred bytes of aliases stand for billions);
 * cycles; prototype keys; and what no YAML file holds (functions, BigInts, symbols, class
 * instances such as Date or Map). `at`: the key path `v` is at, for the messages.
 */
export function checkConfigValue(v: unknown, source: string, at: string[] = [], limit = CONFIG_MAX_VALUES): void {
  let n = 0;
  const holders: object[] = []; // the lists and mappings holding the current value: a cycle returns to one
  const walk = (x: unknown, at: string[]): void => {
    if (++n > limit) throw new UserError(`${source}: expands to more than ${limit} values (nested YAML aliases or shared references?); a config has a few hundred`);
    const t = typeof x;
    if (x === null || x === undefined || t === 'string' || t === 'number' || t === 'boolean') return;
    const key = at.join('.') || '(top level)';
    const proto = t === 'object' ? Object.getPrototypeOf(x) : undefined;
    if (t !== 'object' || !(Array.isArray(x) || proto === Object.prototype || proto === null)) {
      const what = t === 'object' ? `a ${(x as object).constructor?.name || 'class instance'}` : `a ${t}`;
      throw new UserError(`${source}: key '${key}' has ${what}; a config holds only what YAML can: strings, numbers, booleans, null, lists and mappings`);
    }
    if (holders.includes(x as object)) throw new UserError(`${source}: key '${key}' refers back to a list or mapping that holds it (a cycle)`);
    if (holders.length >= CONFIG_MAX_DEPTH) throw new UserError(`${source}: key '${key}' is nested more than ${CONFIG_MAX_DEPTH} levels deep; a config has a few`);
    holders.push(x as object);
    for (const k of Object.keys(x as object)) {
      if (FORBIDDEN_KEYS.has(k)) checkKey([...at, k].join('.'), source);
      walk((x as Record<string, unknown>)[k], [...at, k]);
    }
    holders.pop();
  };
  walk(v, at);
}

/**
 * The text of `file`, read through one descriptor so that what is checked is what is read:
 * only a regular file (a FIFO, /dev/zero or a folder never ends or is no config), and at most
 * CONFIG_MAX_BYTES + 1 bytes whatever `stat` said (a file can grow while it is read).
 */
function readBounded(file: string, via: string, extendedBy?: string): string {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UserError(`config file not found: ${file}${via}`);
    if (code === 'EISDIR') throw folderError(file, extendedBy);
    throw new UserError(`${file}: cannot be read (${code ?? (err as Error).message})${via}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (st.isDirectory()) throw folderError(file, extendedBy);
    if (!st.isFile()) throw new UserError(`${file}: not a regular file (a device, FIFO or socket); expected a YAML file${via}`);
    const buf = Buffer.alloc(CONFIG_MAX_BYTES + 1);
    let got = 0;
    while (got < buf.length) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, got, buf.length - got, null);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') continue; // non-blocking descriptor of a regular file: rare; retry
        throw err;
      }
      if (n === 0) break;
      got += n;
    }
    if (got > CONFIG_MAX_BYTES) throw new UserError(`${file}: more than ${CONFIG_MAX_BYTES} bytes is not a config (configs are a few KB)${via}`);
    return buf.subarray(0, got).toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

function folderError(file: string, extendedBy?: string): UserError {
  return extendedBy
    ? new UserError(`${extendedBy}: key 'extends' names ${file}, a folder; expected a YAML file`)
    : new UserError(`--config ${file} is a folder; expected a YAML file such as configs/demo.yaml`);
}

/** One YAML file as a mapping, or a one-line UserError naming it. */
function readYaml(file: string, via: string, extendedBy?: string): Raw {
  return parseYamlText(readBounded(file, via, extendedBy), file);
}

/** The text of one YAML config as a mapping, or a one-line UserError naming `file` (also the browser page's pasted config). */
export function parseYamlText(text: string, file: string): Raw {
  let raw: unknown;
  try {
    raw = yaml.load(text);
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0];
    throw new UserError(`${file}: not valid YAML: ${msg}`);
  }
  // An empty file (or comments only) is more likely a wrong or unsaved file than a wish
  // for every default; `{}` asks for the defaults on purpose.
  if (raw === null || raw === undefined) throw new UserError(`${file}: the config is empty; start from configs/demo.yaml, or write {} to train on every default`);
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new UserError(`${file}: expected a mapping of sections at the top level`);
  // YAML aliases share one object per reference, so a small file can stand for billions of
  // values, which validation and messages would then walk (seen: 30 s, 2.3 GB, then a crash).
  checkConfigValue(raw, file);
  return raw as Raw;
}

const isMapping = (v: unknown): v is Raw => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * `over` merged onto `base`: mappings key by key, anything else (lists included) replaced.
 * A `model:` section naming another model replaces the base's whole section: the base's
 * other model keys belong to the model it named.
 */
export function mergeConfigs(base: Raw, over: Raw, atRoot = true): Raw {
  const out: Raw = { ...base };
  for (const [k, v] of Object.entries(over)) {
    checkKey(k, 'config'); // `out['__proto__'] = v` would replace out's prototype
    const b = out[k];
    const otherModel = atRoot && k === 'model' && isMapping(v) && isMapping(b) && v.name !== undefined && v.name !== b.name;
    out[k] = isMapping(v) && isMapping(b) && !otherModel ? mergeConfigs(b, v, false) : v;
  }
  return out;
}

/**
 * The config in `file` with the configs it extends merged under it (paths relative to the
 * file); with `compose` false, the file's own keys, `extends` included.
 */
export function readConfigFile(file: string, chain: string[] = [], compose = true): Raw {
  const abs = path.resolve(file);
  if (chain.includes(abs)) throw new UserError(`${file}: extends itself through ${[...chain.slice(chain.indexOf(abs)), abs].map((f) => path.basename(f)).join(' -> ')}`);
  const by = chain.length ? chain[chain.length - 1] : undefined;
  const via = by ? ` (extended by ${by})` : '';
  const raw = readYaml(file, via, by);
  return compose ? composeConfig(raw, path.dirname(abs), file, [...chain, abs]) : raw;
}

/**
 * `raw` (a config read from `source`, or given as an object) with the configs its
 * `extends:` names merged under it; relative names are resolved in `dir`.
 */
export function composeConfig(raw: Raw, dir: string, source = 'config', chain: string[] = []): Raw {
  checkConfigValue(raw, source);
  const own = { ...raw };
  const ext = own.extends;
  delete own.extends;
  if (ext === undefined || ext === null) return own; // null: no bases (`--set extends=null`)
  const bases = typeof ext === 'string' ? [ext] : Array.isArray(ext) && ext.length && ext.every((e) => typeof e === 'string') ? (ext as string[]) : null;
  if (!bases) throw new UserError(`${source}: key 'extends' has ${JSON.stringify(ext)}; expected a config file or a list of them`);
  let merged: Raw = {};
  for (const b of bases) merged = mergeConfigs(merged, readConfigFile(path.resolve(dir, b), chain));
  const out = mergeConfigs(merged, own);
  checkConfigValue(out, `${source} (with what it extends)`);
  return out;
}

export const selfTest: SelfTest = {
  'extends merges sections key by key, lists replaced, later bases winning'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfgx-'));
    const w = (f: string, s: string) => fs.writeFileSync(path.join(dir, f), s);
    w('base.yaml', 'name: base\nmodel: { name: unet, base: 16, depth: 4 }\ntraining: { epochs: 5, batch_size: 4, augmentations: { hflip: { p: 0.5 } } }\ndata: { size: [64, 64] }\n');
    w('other.yaml', 'training: { epochs: 9 }\n');
    fs.mkdirSync(path.join(dir, 'sub'));
    w('sub/child.yaml', 'extends: [../base.yaml, ../other.yaml]\nname: child\nmodel: { depth: 3 }\ntraining: { batch_size: 2 }\ndata: { size: [32, 48] }\n');
    const c = readConfigFile(path.join(dir, 'sub/child.yaml'));
    assert.deepEqual(c, {
      name: 'child',
      model: { name: 'unet', base: 16, depth: 3 },
      training: { epochs: 9, batch_size: 2, augmentations: { hflip: { p: 0.5 } } },
      data: { size: [32, 48] },
    });
    w('arch.yaml', 'extends: base.yaml\nmodel: { name: fpn, encoder: resnet18 }\n');
    assert.deepEqual(readConfigFile(path.join(dir, 'arch.yaml')).model, { name: 'fpn', encoder: 'resnet18' });
    fs.rmSync(dir, { recursive: true });
  },
  'a missing base, a cycle and a bad extends value are one line naming the file'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfgx-'));
    const w = (f: string, s: string) => fs.writeFileSync(path.join(dir, f), s);
    w('a.yaml', 'extends: b.yaml\n');
    w('b.yaml', 'extends: [c.yaml]\n');
    w('c.yaml', 'extends: a.yaml\n');
    w('gone.yaml', 'extends: nowhere.yaml\n');
    w('num.yaml', 'extends: 3\n');
    const one = (f: string, re: RegExp) =>
      assert.throws(() => readConfigFile(path.join(dir, f)), (e: Error) => e instanceof UserError && re.test(e.message) && !e.message.includes('\n'));
    one('a.yaml', /a\.yaml: extends itself through a\.yaml -> b\.yaml -> c\.yaml -> a\.yaml$/);
    one('gone.yaml', /config file not found: .*nowhere\.yaml \(extended by .*gone\.yaml\)$/);
    one('num.yaml', /num\.yaml: key 'extends' has 3; expected a config file or a list of them/);
    fs.rmSync(dir, { recursive: true });
  },
  'a YAML alias bomb, a folder and a huge file are refused in one line, quickly'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'config-'));
    const bomb = path.join(dir, 'bomb.yaml');
    const levels = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 9; i++) levels.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill('*' + String.fromCharCode(96 + i)).join(', ')}]`);
    fs.writeFileSync(bomb, `data:\n  name: synthetic\n  extra:\n${levels.map((l) => '    ' + l).join('\n')}\n`);
    const t0 = Date.now();
    assert.throws(() => readConfigFile(bomb), /bomb\.yaml: expands to more than 100000 values \(nested YAML aliases/);
    assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
    assert.throws(() => readConfigFile(dir), /--config .* is a folder; expected a YAML file/);
    const big = path.join(dir, 'big.yaml');
    fs.writeFileSync(big, `# ${'x'.repeat(2 << 20)}\n{}`);
    assert.throws(() => readConfigFile(big), /big\.yaml: more than 1048576 bytes is not a config/);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
