// User-facing failures: bad config, bad data, bad checkpoints. The CLI prints
// their message as one line and exits non-zero, never with a stack trace.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from './self_test';
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/** Runs a CLI entry point; turns any error into one readable line and exit code 1. */
export async function runCli(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    console.error(`error: ${describeError(err)}`);
    if (!(err instanceof UserError) && process.env.SEMSEG_DEBUG) console.error((err as Error).stack);
    process.exit(1);
  }
}

/**
 * Whether an error is the backend running out of memory: an emscripten abort of the
 * wasm module ('Aborted(OOM)', 'Cannot enlarge memory'), XNNPACK's
 * xnn_status_out_of_memory (status 6), or a JS/native allocation that failed.
 */
export function isAllocationFailure(err: unknown): boolean {
  const msg = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return /Aborted\(|out of memory|\bOOM\b|Cannot enlarge memory|XNN status .*status 6|Got status 6|Array buffer allocation failed|Invalid typed array length|failed to allocate|OOM when allocating/i.test(msg);
}

export function describeError(err: unknown): string {
  if (err instanceof UserError) return err.message;
  // Training says which sizes (engine/trainer.ts); evaluate and predict land here.
  if (isAllocationFailure(err)) return `out of memory (${firstLine(err)}): lower data.size, evaluation.scales, training.batch_size or model.base`;
  if (err instanceof Error) {
    const msg = err.message.split('\n')[0];
    return `${msg} (internal error; set SEMSEG_DEBUG=1 for the stack trace)`;
  }
  return String(err);
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0].slice(0, 120);
}


export const selfTest: SelfTest = {
  'user errors print as their message alone'() {
    assert.equal(describeError(new UserError('data/x.png: expected a PNG')), 'data/x.png: expected a PNG');
  },
  'internal errors give their first line and a hint, not a stack'() {
    const d = describeError(new TypeError('boom\n    at somewhere'));
    assert.match(d, /^boom \(internal error; set SEMSEG_DEBUG=1/);
    assert.doesNotMatch(d, /at somewhere/);
  },
  'allocation failures of wasm, XNNPACK and JS say what to lower'() {
    for (const m of ['Aborted(OOM). Build with -sASSERTIONS for more info.', 'XNN status for xnn_create_convolution2d_nhwc_f32 is not successful. Got status 6. Use -c dbg to see XNN logs.', 'Array buffer allocation failed']) {
      assert.ok(isAllocationFailure(new Error(m)), m);
      assert.match(describeError(new Error(m)), /^out of memory \(.*\): lower data\.size/);
    }
    assert.ok(!isAllocationFailure(new Error('Cannot read properties of undefined')));
  },
};

runIfMain(module, selfTest);
