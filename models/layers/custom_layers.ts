// The project's own layer classes, registered for (de)serialisation through one call
// so that export can tell them from stock tfjs layers: a portable export must hold none.
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../../utils/self_test';

const ours = new Set<string>();

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function registerLayerClass(cls: { className: string }): void {
  tf.serialization.registerClass(cls as unknown as tf.serialization.SerializableConstructor<tf.serialization.Serializable>);
  ours.add(cls.className);
}

/** Whether `className` is one of this project's layers (not loadable by stock tfjs). */
export function isProjectLayer(className: string): boolean {
  return ours.has(className);
}

export const selfTest: SelfTest = {
  'a registered class is ours and deserialisable; stock ones are not ours'() {
    class ZzTestLayer extends tf.layers.Layer {
      static className = 'ZzTestLayer';
    }
    registerLayerClass(ZzTestLayer);
    assert.ok(isProjectLayer('ZzTestLayer'));
    assert.ok(!isProjectLayer('Conv2D'));
    assert.equal(tf.serialization.SerializationMap.getMap().classNameMap.ZzTestLayer[0], ZzTestLayer);
  },
};

runIfMain(module, selfTest);
