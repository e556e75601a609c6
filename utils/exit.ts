// Leaving the process with work to finish first: a started GPU device is released
// before exit (Dawn aborts the process, 'std::system_error', when process.exit meets
// its threads still busy). Backends register what to do with onExit.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest, setSelfTestExit } from './self_test';

const hooks: Array<() => Promise<void> | void> = [];

/** Registers `fn` to run (once, awaited) before exitWith ends the process. */
export function onExit(fn: () => Promise<void> | void): void {
  if (!hooks.includes(fn)) hooks.push(fn);
}

/**
 * Runs the exit hooks (errors in them are ignored: the exit code is the caller's), for
 * at most `limitMs`, then exits.
 */
export async function exitWith(code: number, limitMs = 5000): Promise<never> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([runExitHooks(), new Promise<void>((r) => { timer = setTimeout(r, limitMs); })]);
  clearTimeout(timer);
  process.exit(code);
}

// A module run on its own (its self-test) exits through the hooks too.
setSelfTestExit((code) => exitWith(code));

export async function runExitHooks(): Promise<void> {
  for (const fn of hooks.splice(0)) {
    try {
      await fn();
    } catch {
      // leaving anyway
    }
  }
}

export const selfTest: SelfTest = {
  async 'hooks run once, in order, and a failing one does not stop the others'() {
    const seen: string[] = [];
    onExit(() => { seen.push('a'); });
    onExit(() => { throw new Error('x'); });
    onExit(async () => { seen.push('c'); });
    await runExitHooks();
    await runExitHooks();
    assert.deepEqual(seen, ['a', 'c']);
  },
};

runIfMain(module, selfTest);
