// node:path (posix) for the browser bundle: the modules build folder names at load time
// (a registry's folder) and in messages; the page has no file system behind them.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../../utils/self_test';

export const sep = '/';

export function normalize(p: string): string {
  const abs = p.startsWith('/');
  const out: string[] = [];
  for (const s of p.split('/')) {
    if (!s || s === '.') continue;
    if (s === '..' && out.length && out[out.length - 1] !== '..') out.pop();
    else if (s !== '..' || !abs) out.push(s);
  }
  return (abs ? '/' : '') + out.join('/') || (abs ? '/' : '.');
}
export const join = (...parts: string[]) => normalize(parts.filter(Boolean).join('/'));
export const resolve = (...parts: string[]) => normalize(parts.reduce((a, p) => (p.startsWith('/') ? p : `${a}/${p}`), '/'));
export const basename = (p: string, ext?: string) => {
  const b = p.replace(/\/+$/, '').split('/').pop() ?? '';
  return ext && b.endsWith(ext) ? b.slice(0, -ext.length) : b;
};
export const dirname = (p: string) => {
  const t = p.replace(/\/+$/, '');
  if (!t) return p.startsWith('/') ? '/' : '.';
  const i = t.lastIndexOf('/');
  return i < 0 ? '.' : i === 0 ? '/' : t.slice(0, i);
};
export const extname = (p: string) => {
  const b = basename(p);
  const i = b.lastIndexOf('.');
  return i <= 0 ? '' : b.slice(i);
};
export const relative = (from: string, to: string) => (to.startsWith(from + '/') ? to.slice(from.length + 1) : to);
export const isAbsolute = (p: string) => p.startsWith('/');
export const posix = { sep, normalize, join, resolve, basename, dirname, extname, relative, isAbsolute };
export default posix;

export const selfTest: SelfTest = {
  'joins, splits and names as node:path/posix does'() {
    const path = require('node:path').posix;
    for (const p of ['/a/b/../c.ts', 'a/./b', '/x', 'x.tar.gz', '.hidden', '/']) {
      assert.equal(normalize(p), path.normalize(p), p);
      assert.equal(basename(p), path.basename(p), p);
      assert.equal(dirname(p), path.dirname(p), p);
      assert.equal(extname(p), path.extname(p), p);
    }
    assert.equal(join('/', 'models', 'unet.ts'), '/models/unet.ts');
    assert.equal(join('/a', 'losses'), path.join('/a', 'losses'));
  },
};

runIfMain(module, selfTest);
