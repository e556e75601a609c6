// Runs every module's own checks (the ones `npx tsx <module>.ts` runs) under npm test,
// and fails if a module in models/, loaders/, utils/ or training/ has none.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { selfTestOf, type SelfTest } from '../utils/self_test';
import { runExitHooks } from '../utils/exit';

// The webgpu kernels' checks start a device; Dawn crashes a process that exits with one alive.
after(() => runExitHooks());

const root = path.resolve(__dirname, '..');
const ext = path.extname(__filename); // .js when compiled, .ts under tsx

function modules(dir: string): string[] {
  const abs = path.join(root, dir);
  return fs.readdirSync(abs, { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) return modules(rel);
    return e.name.endsWith(ext) && !e.name.endsWith('.d.ts') ? [rel] : [];
  });
}

for (const file of ['api', 'config', 'storage', 'models', 'loaders', 'pipeline', 'engine', 'backends', 'report', 'deploy', 'utils', 'training'].flatMap(modules).sort()) {
  const name = file.slice(0, -ext.length);
  test(name, async (t) => {
    const abs = path.join(root, file);
    const mod = require(abs) as { selfTest?: SelfTest };
    // The public API exports no test code: its checks are found by file (runIfMain).
    if (name === path.join('api', 'index')) assert.equal(mod.selfTest, undefined, 'the public API exports selfTest');
    const checks = mod.selfTest ?? selfTestOf(require.resolve(abs));
    assert.ok(checks && Object.keys(checks).length > 0, `${file} has no self-test checks`);
    for (const [check, fn] of Object.entries(checks)) await t.test(check, fn);
  });
}
