// node:async_hooks for the browser bundle: utils/warnings.ts keeps each call's warning sink in
// an AsyncLocalStorage. The page runs one training at a time, so a store set for the length of
// run() (and read by whatever runs synchronously inside it) is what it needs.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../../utils/self_test';

export class AsyncLocalStorage<T> {
  private store: T | undefined;
  run<R>(store: T, fn: (...a: unknown[]) => R, ...args: unknown[]): R {
    const prev = this.store;
    this.store = store;
    try {
      return fn(...args);
    } finally {
      this.store = prev;
    }
  }
  getStore(): T | undefined {
    return this.store;
  }
}

export default { AsyncLocalStorage };

export const selfTest: SelfTest = {
  'run sets the store for its body and restores it'() {
    const s = new AsyncLocalStorage<number>();
    assert.equal(s.run(1, () => s.getStore()), 1);
    assert.equal(s.getStore(), undefined);
  },
};

runIfMain(module, selfTest);
