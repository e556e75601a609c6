// The registries' entry files (models, losses, optimizers, schedules, encoders, datasets),
// found as Node finds them (each FolderRegistry's folder). The browser page imports this
// module; bundle.ts replaces its text there with one static import per file this lists at
// build time, so the page has every part Node has and no second hand-kept list exists.
import assert from 'node:assert/strict';
import path from 'node:path';
import { allRegistries } from '../../utils/folder_registry';
import { runIfMain, SelfTest } from '../../utils/self_test';

/** Loads every registry and its entries (entries may make registries: encoders) and lists the entry files. */
export function registryEntryFiles(): string[] {
  require('../../config/resolve'); // models, losses, optimizers, schedules
  require('../../loaders/registry'); // datasets: the page's data is the folder loader's
  const seen = new Set<string>();
  for (let before = -1; seen.size !== before; ) {
    before = seen.size;
    for (const r of [...allRegistries]) {
      for (const f of r.entryFiles().files) {
        if (seen.has(f)) continue;
        seen.add(f);
        require(f); // registers itself, and any registry it makes
      }
    }
  }
  return [...seen].sort();
}

/** The source (.ts) beside the package root of a compiled file under dist/, or the file itself under tsx. */
export function sourceOf(file: string, root: string): string {
  const rel = path.relative(path.join(root, 'dist'), file);
  return rel.startsWith('..') ? file : path.join(root, rel.replace(/\.js$/, '.ts'));
}

export const selfTest: SelfTest = {
  'lists the parts of every registry, the models and losses among them'() {
    const names = registryEntryFiles().map((f) => path.relative(path.join(__dirname, '..', '..'), f).replace(/\.(js|ts)$/, ''));
    for (const n of ['models/unet', 'training/losses/dice', 'training/optimizers/adam', 'training/schedules/cosine', 'loaders/folder']) assert.ok(names.includes(n), `${n} in ${names.join(', ')}`);
    assert.ok(!names.includes('models/registry'));
  },
};

runIfMain(module, selfTest);
