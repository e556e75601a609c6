// Dataset loaders by name, like MMSegmentation's DATASETS registry. A loader only
// lists image/mask file pairs and says how raw mask values become class ids;
// decoding, augmentation and batching are shared.
import assert from 'node:assert/strict';
import type { Config } from '../utils/config';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';

export interface PairRef { id: string; image: string; mask: string }

/** raw mask value (index) -> class id, ignore index, or -1 for "not a known value". */
export type MaskLut = Int16Array;

export interface DatasetLoader {
  name: string;
  listPairs(cfg: Config, split: string): Promise<PairRef[]> | PairRef[];
  /** Defaults to identityLut: values 0..num_classes-1 and the ignore index are valid. */
  maskLut?(cfg: Config): MaskLut;
}

const loaders = new Map<string, DatasetLoader>();

export function registerLoader(l: DatasetLoader): void {
  loaders.set(l.name, l);
}

export function getLoader(name: string): DatasetLoader {
  const l = loaders.get(name);
  if (!l) throw new UserError(`unknown dataset 'data.name: ${name}': expected one of ${[...loaders.keys()].sort().join(', ')}`);
  return l;
}

export function registeredLoaders(): string[] {
  return [...loaders.keys()];
}

export function identityLut(cfg: Config): MaskLut {
  const lut = new Int16Array(256).fill(-1);
  for (let v = 0; v < Math.min(cfg.data.num_classes, 256); v++) lut[v] = v;
  lut[cfg.data.ignore_index] = cfg.data.ignore_index;
  return lut;
}

export function maskLutFor(cfg: Config): MaskLut {
  const l = getLoader(cfg.data.name);
  return l.maskLut ? l.maskLut(cfg) : identityLut(cfg);
}

export const selfTest: SelfTest = {
  'unknown name lists the registered ones'() {
    registerLoader({ name: 'zz_test', listPairs: () => [] });
    assert.throws(() => getLoader('nope'), (e: Error) => e instanceof UserError && /expected one of .*zz_test/.test(e.message));
    assert.equal(getLoader('zz_test').name, 'zz_test');
    loaders.delete('zz_test');
  },
};

runIfMain(module, selfTest);
