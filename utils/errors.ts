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

export function describeError(err: unknown): string {
  if (err instanceof UserError) return err.message;
  if (err instanceof Error) {
    const msg = err.message.split('\n')[0];
    return `${msg} (internal error; set SEMSEG_DEBUG=1 for the stack trace)`;
  }
  return String(err);
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
};

runIfMain(module, selfTest);
