// Each production module (models/, loaders/, pipeline/, engine/, backends/, report/, utils/, training/) exports `selfTest`, a set of named
// checks. Running the module file on its own (`npx tsx models/unet.ts` or
// `node dist/models/unet.js`) runs them, like Python's `if __name__ == "__main__"`;
// test/self_tests.test.ts runs the same checks under `npm test`.
import assert from 'node:assert/strict';
export type Check = () => void | Promise<void>;
export type SelfTest = Record<string, Check>;

// Checks by module file, for a module that keeps them out of its exports (the public API,
// api/index.ts, exports no test code); test/self_tests.test.ts finds them here.
const registered = new Map<string, SelfTest>();

/** The checks a module passed to runIfMain, by its file name. */
export function selfTestOf(filename: string): SelfTest | undefined {
  return registered.get(filename);
}

/** A CommonJS module, as far as this file needs one (the declarations then need no @types/node). */
export interface ModuleLike {
  filename: string;
}

// How a module run on its own ends. utils/exit.ts (which imports this file, so this file
// cannot import it) installs its exitWith when loaded, so exit hooks (a GPU device to
// release) run first; where it was never loaded no hook can have been registered.
let exitAfterChecks: (code: number) => unknown = (code) => process.exit(code);

/** Installs how a self-test run exits (utils/exit.ts, at load). */
export function setSelfTestExit(exit: (code: number) => unknown): void {
  exitAfterChecks = exit;
}

export function runIfMain(mod: ModuleLike, checks: SelfTest): void {
  registered.set(mod.filename, checks);
  if (!isMainModule(mod)) return;
  void runChecks(mod.filename, checks).then((ok) => exitAfterChecks(ok ? 0 : 1));
}

/**
 * `require.main === mod`, except inside an esbuild bundle (bench/gpu_check.sh), where
 * every file shares the bundle's `module`, so every file would think it is the entry;
 * the bundle's banner sets the flag. A bundle's entry checks require.main itself.
 */
export function isMainModule(mod: ModuleLike): boolean {
  return (require.main as ModuleLike | undefined) === mod && !(globalThis as { __semsegBundle?: boolean }).__semsegBundle;
}

export async function runChecks(label: string, checks: SelfTest): Promise<boolean> {
  let failed = 0;
  const names = Object.keys(checks);
  for (const name of names) {
    const t0 = Date.now();
    try {
      await checks[name]();
      console.log(`ok   ${name} (${Date.now() - t0} ms)`);
    } catch (err) {
      failed++;
      console.log(`FAIL ${name}: ${(err as Error).message}`);
      if (process.env.SEMSEG_DEBUG) console.log((err as Error).stack);
    }
  }
  console.log(`${label}: ${names.length - failed} passed, ${failed} failed`);
  return failed === 0;
}


export const selfTest: SelfTest = {
  async 'a failing check is counted, the others still run'() {
    const log = console.log;
    const lines: string[] = [];
    console.log = (s: string) => lines.push(s);
    let ran = false;
    try {
      const ok = await runChecks('demo', {
        fails() {
          throw new Error('nope');
        },
        passes() {
          ran = true;
        },
      });
      assert.equal(ok, false);
    } finally {
      console.log = log;
    }
    assert.ok(ran);
    assert.equal(lines.at(-1), 'demo: 1 passed, 1 failed');
  },
};

runIfMain(module, selfTest);
