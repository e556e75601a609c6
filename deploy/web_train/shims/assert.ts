// node:assert/strict for the browser bundle (deploy/web_train/bundle.ts aliases it here): the
// project's modules assert invariants at run time, so the page needs the calls, not Node.
// Only the forms the product code uses; messages follow Node's enough to read in a console.
import { runIfMain, SelfTest } from '../../../utils/self_test';

class AssertionError extends Error {
  name = 'AssertionError';
}

function fail(message?: string | Error, fallback = 'Failed'): never {
  if (message instanceof Error) throw message;
  throw new AssertionError(message ?? fallback);
}

function same(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  const ka = Object.keys(a), kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

function matches(err: unknown, expected: unknown): boolean {
  if (expected === undefined) return true;
  if (expected instanceof RegExp) return expected.test(String((err as Error)?.message ?? err));
  if (typeof expected === 'function') return (expected as { prototype?: unknown }).prototype !== undefined && err instanceof (expected as new () => unknown) ? true : (expected as (e: unknown) => boolean)(err) === true;
  return true;
}

type Msg = string | Error;
type Assert = ((v: unknown, m?: Msg) => asserts v) & Record<string, any>;
const assert: Assert = Object.assign((v: unknown, m?: Msg) => ok(v, m), {
  AssertionError,
  ok, fail,
  equal: (a: unknown, b: unknown, m?: Msg) => (Object.is(a, b) ? undefined : fail(m, `${String(a)} !== ${String(b)}`)),
  notEqual: (a: unknown, b: unknown, m?: Msg) => (!Object.is(a, b) ? undefined : fail(m, `${String(a)} === ${String(b)}`)),
  strictEqual: (a: unknown, b: unknown, m?: Msg) => (Object.is(a, b) ? undefined : fail(m, `${String(a)} !== ${String(b)}`)),
  deepEqual: (a: unknown, b: unknown, m?: Msg) => (same(a, b) ? undefined : fail(m, 'values are not deeply equal')),
  deepStrictEqual: (a: unknown, b: unknown, m?: Msg) => (same(a, b) ? undefined : fail(m, 'values are not deeply equal')),
  notDeepEqual: (a: unknown, b: unknown, m?: Msg) => (!same(a, b) ? undefined : fail(m, 'values are deeply equal')),
  match: (s: string, re: RegExp, m?: Msg) => (re.test(s) ? undefined : fail(m, `${s} does not match ${re}`)),
  throws(fn: () => unknown, expected?: unknown, m?: Msg) {
    try {
      fn();
    } catch (e) {
      if (!matches(e, expected)) fail(m, `the error did not match: ${(e as Error)?.message}`);
      return;
    }
    fail(m, 'Missing expected exception.');
  },
  async rejects(p: Promise<unknown> | (() => Promise<unknown>), expected?: unknown, m?: Msg) {
    try {
      await (typeof p === 'function' ? p() : p);
    } catch (e) {
      if (!matches(e, expected)) fail(m, `the rejection did not match: ${(e as Error)?.message}`);
      return;
    }
    fail(m, 'Missing expected rejection.');
  },
});

function ok(v: unknown, m?: Msg): asserts v {
  if (!v) fail(m, 'The expression evaluated to a falsy value');
}

export default assert;
export { AssertionError };

export const selfTest: SelfTest = {
  'the assertions the product code uses pass and fail as Node\'s do'() {
    assert.ok(true);
    assert.deepEqual({ a: [1, 2] }, { a: [1, 2] });
    assert.throws(() => assert.equal(1, 2, 'one is not two'), /one is not two/);
    assert.throws(() => assert.deepEqual([1], [2]), AssertionError);
    assert.throws(() => assert(0), /falsy/);
    assert.throws(() => assert.throws(() => undefined), /Missing expected exception/);
    assert.match('abc', /b/);
  },
};

runIfMain(module, selfTest);
