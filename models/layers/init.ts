// Seeded weight initialisers: the same training.seed gives the same initial weights, so
// runs are reproducible. The layer name is hashed into the seed so each layer draws its own values.
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';

function layerSeed(name: string, seed: number): number {
  let h = seed ^ 0x9e3779b9;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return (h >>> 0) % 2147483647;
}

/** He-normal (fan-in), for convolutions followed by ReLU: PyTorch's kaiming_normal_. */
export function heInit(name: string, seed: number) {
  return tf.initializers.heNormal({ seed: layerSeed(name, seed) });
}

/** Glorot-uniform, for layers not followed by a ReLU (gates, projections). */
export function glorotInit(name: string, seed: number) {
  return tf.initializers.glorotUniform({ seed: layerSeed(name, seed) });
}

export const selfTest: SelfTest = {
  'the same name and seed draw the same values; another name or seed others'() {
    const draw = (name: string, seed: number) => tf.tidy(() => Array.from(heInit(name, seed).apply([3, 3, 4, 4]).dataSync()));
    assert.deepEqual(draw('a', 1), draw('a', 1));
    assert.notDeepEqual(draw('a', 1), draw('b', 1));
    assert.notDeepEqual(draw('a', 1), draw('a', 2));
  },
};

runIfMain(module, selfTest);
