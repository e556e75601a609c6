// Warnings ("warning: ..." lines: a split read twice, weights that do not fit, a GPU option
// unused): the commands print them on stderr; a library call hands them to its caller
// (api/options.ts: onWarning, the result's warnings) and prints them unless quiet. Each
// call's receiver travels with its async work (AsyncLocalStorage), so two calls running
// at once in one host program each get their own.
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { runIfMain, SelfTest } from './self_test';

export type WarningSink = (line: string) => void;

const calls = new AsyncLocalStorage<WarningSink>();

/** A warning: to the current library call's receiver, else to stderr. */
export function warning(line: string): void {
  const sink = calls.getStore();
  if (sink) sink(line);
  else console.warn(line); // looked up at each call: tests replace console.warn
}

/** A warning from work asked to be quiet: to the current call's receiver only. */
export function quietWarning(line: string): void {
  calls.getStore()?.(line);
}

/** Runs `fn` with its warnings (and those of everything it awaits) going to `sink`. */
export function withWarnings<T>(sink: WarningSink, fn: () => Promise<T>): Promise<T> {
  return calls.run(sink, fn);
}

export const selfTest: SelfTest = {
  async 'each call gets its own warnings, across awaits; outside a call they go to stderr'() {
    const a: string[] = [];
    const b: string[] = [];
    const tick = () => new Promise((r) => setTimeout(r, 1));
    await Promise.all([
      withWarnings((l) => a.push(l), async () => { await tick(); warning('a1'); await tick(); quietWarning('a2'); }),
      withWarnings((l) => b.push(l), async () => { warning('b1'); await tick(); }),
    ]);
    assert.deepEqual([a, b], [['a1', 'a2'], ['b1']]);
    const printed: string[] = [];
    const orig = console.warn;
    console.warn = (l: string) => printed.push(l);
    try {
      warning('x');
      quietWarning('dropped');
    } finally {
      console.warn = orig;
    }
    assert.deepEqual(printed, ['x']);
  },
};

runIfMain(module, selfTest);
