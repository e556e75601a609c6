// Stands in for Node-only modules (node:fs, node:os, node:crypto, node:worker_threads, sharp,
// node:zlib) in the browser bundle: modules that import them load, and the page never calls
// them (the page reads files through the browser); a call that happens anyway names itself
// instead of failing as an undefined. deploy/web_train/bundle.ts lists the modules that still
// import one, so what reaches the page stays visible.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../../utils/self_test';

export function nodeOnly(name: string): unknown {
  const fn = function () {
    throw new Error(`${name} is not available in the browser`);
  };
  return new Proxy(fn, {
    get: (_t, key) => (key === '__esModule' || key === 'then' || typeof key === 'symbol' ? undefined : key === 'default' ? nodeOnly(name) : nodeOnly(`${name}.${String(key)}`)),
    apply: () => fn(),
    construct: () => fn(),
  });
}

export const selfTest: SelfTest = {
  'a property reads, a call names what was called'() {
    const fs = nodeOnly('node:fs') as { promises: { readFile: () => void }; existsSync?: unknown };
    assert.equal(typeof fs.existsSync, 'function');
    assert.throws(() => fs.promises.readFile(), /node:fs\.promises\.readFile is not available in the browser/);
  },
};

runIfMain(module, selfTest);
