// Each module in models/, loaders/ and utils/ exports `selfTest`, a set of named
// checks. Running the module file on its own (`npx tsx models/unet.ts` or
// `node dist/models/unet.js`) runs them, like Python's `if __name__ == "__main__"`;
// test/self_tests.test.ts runs the same checks under `npm test`.
export type Check = () => void | Promise<void>;
export type SelfTest = Record<string, Check>;

export function runIfMain(mod: NodeModule, checks: SelfTest): void {
  if (require.main !== mod) return;
  void runChecks(mod.filename, checks).then((ok) => process.exit(ok ? 0 : 1));
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
