// Dropout whose masks repeat with the run: in a training step each mask is a pure
// function of (training.seed, global step, layer name, call within the step), so two runs
// with one seed draw the same masks and a resumed run draws those the uninterrupted one
// would have. Stock Dropout draws unseeded (or, with a seed, one mask every step). The
// mask is drawn in JS (mulberry32), so it is the same on every backend. Same config as
// stock Dropout, which stands in for it in exports (inference is the identity in both).
import * as tf from '../../backends/tf';
import type { Dropout } from '@tensorflow/tfjs-layers/dist/layers/core';
import assert from 'node:assert/strict';
import { hashSeed, mulberry32 } from '../../utils/rng';
import { runIfMain, SelfTest } from '../../utils/self_test';
import { registerLayerClass } from './custom_layers';

type DropoutArgs = Parameters<typeof tf.layers.dropout>[0];
// The class itself is not exported by @tensorflow/tfjs; take it from an instance.
const DropoutBase = Object.getPrototypeOf(tf.layers.dropout({ rate: 0 })).constructor as new (args: DropoutArgs) => Dropout;

/** The training step being run: its seed and global step, and the calls of each layer in it. */
interface StepRandomness {
  seed: number;
  step: number;
  calls: Map<string, number>;
}
let current: StepRandomness | null = null;

/**
 * Runs `fn` (a training step's forward pass) with dropout masks drawn from (seed, step):
 * engine/train_step sets it, with the run's training.seed and global step.
 */
export function withStepRandomness<R>(seed: number, step: number, fn: () => R): R {
  const outer = current;
  current = { seed, step, calls: new Map() };
  try {
    return fn();
  } finally {
    current = outer;
  }
}

/** A string as a 32-bit integer (FNV-1a), for hashSeed. */
function nameHash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export class SeededDropout extends DropoutBase {
  static className = 'SeededDropout';
  /** Training-mode calls outside a training step (a host's own model.apply): their masks' stream. */
  private ownCalls = 0;

  call(inputs: tf.Tensor | tf.Tensor[], kwargs: { training?: boolean }): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    const { rate } = this as unknown as { rate: number }; // private in the base class's typings
    if (!kwargs?.training || !(rate > 0 && rate < 1)) return x;
    return tf.tidy(() => {
      const shape = (this as unknown as { getNoiseShape(t: tf.Tensor): number[] | null }).getNoiseShape(x) ?? x.shape;
      const name = nameHash(this.name);
      let seed: number;
      if (current) {
        const k = current.calls.get(this.name) ?? 0;
        current.calls.set(this.name, k + 1);
        seed = hashSeed(current.seed, current.step, name, k);
      } else {
        seed = hashSeed(0x5eed, this.ownCalls++, name);
      }
      const rng = mulberry32(seed);
      const keep = Math.fround(1 / (1 - rate));
      const mask = new Float32Array(shape.reduce((a, b) => a * b, 1));
      for (let i = 0; i < mask.length; i++) mask[i] = rng() >= rate ? keep : 0;
      return tf.mul(x, tf.tensor(mask, shape));
    });
  }
}
registerLayerClass(SeededDropout);

/** For export: stock Dropout has the same config (and no weights). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function portableDropout(layer: any): void {
  layer.class_name = 'Dropout';
}

export function seededDropout(args: DropoutArgs): SeededDropout {
  return new SeededDropout(args);
}

export const selfTest: SelfTest = {
  'in a step, masks repeat with (seed, step) and change with either; inference is the identity'() {
    const layer = seededDropout({ rate: 0.5, name: 't_drop' });
    const x = tf.ones([2, 4, 4, 3]);
    const draw = (seed: number, step: number) => withStepRandomness(seed, step, () => tf.tidy(() => Array.from((layer.apply(x, { training: true }) as tf.Tensor).dataSync())));
    const a = draw(1, 7);
    assert.deepEqual(draw(1, 7), a);
    assert.notDeepEqual(draw(1, 8), a);
    assert.notDeepEqual(draw(2, 7), a);
    assert.ok(a.every((v) => v === 0 || v === 2), 'kept values are scaled by 1 / (1 - rate)');
    const kept = a.filter((v) => v > 0).length / a.length;
    assert.ok(kept > 0.3 && kept < 0.7, `kept ${kept}`);
    assert.deepEqual(Array.from((layer.apply(x, { training: false }) as tf.Tensor).dataSync()), Array.from(x.dataSync()));
    assert.deepEqual(Array.from((layer.apply(x) as tf.Tensor).dataSync()), Array.from(x.dataSync()));
    tf.dispose(x);
  },
  'a second call of one layer in a step draws another mask'() {
    const layer = seededDropout({ rate: 0.5, name: 't_twice' });
    const x = tf.ones([1, 8, 8, 2]);
    const [a, b] = withStepRandomness(3, 0, () => [0, 1].map(() => tf.tidy(() => Array.from((layer.apply(x, { training: true }) as tf.Tensor).dataSync()))));
    assert.notDeepEqual(a, b);
    tf.dispose(x);
  },
  'a noise shape [n, 1, 1, c] drops whole channels per sample'() {
    const layer = seededDropout({ rate: 0.5, noiseShape: [null, 1, 1, 16] as unknown as number[], name: 't_channels' });
    const x = tf.ones([3, 5, 6, 16]);
    const y = withStepRandomness(4, 2, () => layer.apply(x, { training: true }) as tf.Tensor4D);
    const v = y.arraySync();
    let dropped = 0;
    for (let n = 0; n < 3; n++) {
      for (let c = 0; c < 16; c++) {
        const first = v[n][0][0][c];
        for (const row of v[n]) for (const px of row) assert.equal(px[c], first, `sample ${n} channel ${c} is not one value`);
        if (first === 0) dropped++;
      }
    }
    assert.ok(dropped > 5 && dropped < 43, `${dropped} of 48 channels dropped`);
    tf.dispose([x, y]);
  },
  async 'the same masks on cpu and wasm'() {
    const previous = tf.getBackend();
    const { initBackend } = await import('../../backends'); // on use: importing it makes wasm the default backend
    const masks: number[][] = [];
    try {
      for (const be of ['cpu', 'wasm']) {
        await initBackend(be as 'cpu' | 'wasm');
        const layer = seededDropout({ rate: 0.3, name: 't_backends' });
        masks.push(withStepRandomness(9, 5, () => tf.tidy(() => Array.from((layer.apply(tf.ones([2, 3, 3, 4]), { training: true }) as tf.Tensor).dataSync()))));
      }
    } finally {
      await tf.setBackend(previous);
    }
    assert.deepEqual(masks[1], masks[0]);
  },
  async 'the stock Dropout stands in for it in an export'() {
    const input = tf.input({ shape: [null, null, 3] });
    const m = tf.model({ inputs: input, outputs: seededDropout({ rate: 0.2, noiseShape: [null, 1, 1, 3] as unknown as number[], name: 't_export' }).apply(input) as tf.SymbolicTensor });
    const topo = JSON.parse(JSON.stringify(m.toJSON(null, false)));
    for (const l of topo.config.layers) if (l.class_name === 'SeededDropout') portableDropout(l);
    const stock = await tf.models.modelFromJSON({ modelTopology: topo });
    const l = stock.getLayer('t_export') as unknown as Dropout;
    assert.equal(l.getClassName(), 'Dropout');
    assert.equal(l.getConfig().rate, 0.2);
    assert.deepEqual(l.getConfig().noiseShape, [null, 1, 1, 3]);
    stock.dispose();
    m.dispose();
  },
};

runIfMain(module, selfTest);
