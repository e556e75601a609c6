// Reads one of the package's own data files (e.g. weights/mobilenet_v2_imagenet/) by its path
// inside the package. In Node, from the package root; the browser training page's bundle swaps
// this module for deploy/web_train/browser_package_files.ts, which fetches the same path from
// beside the page (web-train copies those files there), so callers stay one code path.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from './package_root';
import { UserError } from './errors';
import { runIfMain, SelfTest } from './self_test';

/** The bytes of `rel` (a '/'-separated path inside the package); `purpose` starts the one-line error when it is missing. */
export async function readPackageFile(rel: string, purpose: string): Promise<Uint8Array> {
  const file = path.join(packageRoot(), ...rel.split('/'));
  try {
    return fs.readFileSync(file);
  } catch {
    throw new UserError(`${purpose} reads ${file}, which is missing: reinstall tfjs-semseg`);
  }
}

export const selfTest: SelfTest = {
  async 'reads a package file; a missing one is one line naming it and the purpose'() {
    const text = new TextDecoder().decode(await readPackageFile('weights/mobilenet_v2_imagenet/model.json', 'x'));
    assert.ok(text.startsWith('{'));
    await assert.rejects(readPackageFile('weights/none.bin', "model.encoder_weights: 'imagenet'"), (e: Error) => e instanceof UserError && /^model\.encoder_weights: 'imagenet' reads .*none\.bin, which is missing: reinstall tfjs-semseg$/.test(e.message));
  },
};

runIfMain(module, selfTest);
