// Small seeded PRNG for the data pipeline. Every random draw is a pure function of
// (seed, epoch, position), so a resumed run sees exactly the same samples.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from './self_test';

export type Rng = () => number; // uniform in [0, 1)

/** mulberry32: 32-bit state, fast, good enough for augmentation draws. */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Mixes integers into one 32-bit seed (murmur3 finaliser per part), so nearby tuples give unrelated streams. */
export function hashSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    let k = Math.imul((p | 0) ^ Math.floor(p / 4294967296), 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h = Math.imul(h ^ Math.imul(k, 0x1b873593), 5) + 0xe6546b64;
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
  }
  return h >>> 0;
}

export function rngFor(...parts: number[]): Rng {
  return mulberry32(hashSeed(...parts));
}

export function uniform(rng: Rng, lo: number, hi: number): number {
  return lo + (hi - lo) * rng();
}

export function randInt(rng: Rng, n: number): number {
  return Math.floor(rng() * n);
}

/** Standard normal via Box-Muller. */
export function gaussian(rng: Rng): number {
  const u = 1 - rng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng());
}

/** Fisher-Yates permutation of 0..n-1. */
export function permutation(n: number, rng: Rng): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
  return a;
}

/** Deterministic pseudo-random values in [-1, 1) so both backends see the same data. */
export function seededValues(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = (s / 2 ** 32) * 2 - 1;
  }
  return out;
}

export const selfTest: SelfTest = {
  'same seed, same stream'() {
    const a = rngFor(42, 3, 7);
    const b = rngFor(42, 3, 7);
    for (let i = 0; i < 100; i++) assert.equal(a(), b());
    assert.notEqual(rngFor(42, 3, 7)(), rngFor(42, 3, 8)());
  },
  'uniform in [0,1) with sane mean'() {
    const r = mulberry32(1);
    let s = 0;
    for (let i = 0; i < 10000; i++) {
      const v = r();
      assert.ok(v >= 0 && v < 1);
      s += v;
    }
    assert.ok(Math.abs(s / 10000 - 0.5) < 0.02);
  },
  'permutation is a permutation'() {
    const p = permutation(50, mulberry32(5));
    assert.deepEqual([...p].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
  },
  'gaussian has unit variance'() {
    const r = mulberry32(9);
    let s = 0,
      s2 = 0;
    for (let i = 0; i < 20000; i++) {
      const g = gaussian(r);
      s += g;
      s2 += g * g;
    }
    assert.ok(Math.abs(s / 20000) < 0.05 && Math.abs(s2 / 20000 - 1) < 0.05);
  },
};

runIfMain(module, selfTest);
