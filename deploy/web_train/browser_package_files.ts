// utils/package_files.ts in the browser training page (bundle.ts swaps it in): the package's
// data files are fetched from beside the page, where `tfjs-semseg web-train` copies them
// (files.ts PACKAGE_DATA). Tested in headless Chromium by test/web_train.test.ts.
import assert from 'node:assert/strict';
import { UserError } from '../../utils/errors';
import { runIfMain, SelfTest } from '../../utils/self_test';

/** The URL of package file `rel` for a page at `page`: the same path, relative to the page's folder. */
export function packageFileUrl(rel: string, page: string): string {
  return new URL(rel, page).href;
}

export async function readPackageFile(rel: string, purpose: string): Promise<Uint8Array> {
  const url = packageFileUrl(rel, location.href);
  const missing = (why: string) => new UserError(`${purpose} fetches ${url}, which failed (${why}): write the page again with \`tfjs-semseg web-train\`, which puts ${rel} beside it`);
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw missing((e as Error).message);
  }
  if (!res.ok) throw missing(`HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

export const selfTest: SelfTest = {
  'a package file is fetched from the page\'s folder, whatever the page\'s query'() {
    assert.equal(packageFileUrl('weights/a/model.json', 'http://h:1/train/index.html?backend=wasm'), 'http://h:1/train/weights/a/model.json');
    assert.equal(packageFileUrl('weights/a/model.json', 'http://h:1/train/'), 'http://h:1/train/weights/a/model.json');
  },
};

runIfMain(module, selfTest);
