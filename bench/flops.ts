// Multiply-adds of a model's convolutions and dense layers for one image at a fixed
// size, from its layers' shapes. GFLOPs = 2 x GMACs, as the README's architecture table
// reports them (elementwise ops, pooling and resizing are not counted, as in fvcore and
// mmcv's get_flops).
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import { isMainModule } from '../utils/self_test';
import { fixedSizeTopology } from '../models/registry';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyLayer = tf.layers.Layer & Record<string, any>;

export async function modelMacs(model: tf.LayersModel, height: number, width: number): Promise<number> {
  const fixed = await tf.models.modelFromJSON({ modelTopology: fixedSizeTopology(model, height, width) });
  let macs = 0;
  for (const layer of fixed.layers as AnyLayer[]) {
    const out = layer.outputShape as number[];
    const inShape = (layer.inboundNodes[0]?.inputShapes ?? []) as number[] | number[][];
    const cin = (Array.isArray(inShape[0]) ? (inShape as number[][])[0] : (inShape as number[]))[3];
    const px = (s: number[]) => s[1] * s[2];
    const k = (layer.kernelSize as number[] | undefined)?.reduce((a, b) => a * b, 1) ?? 1;
    switch (layer.getClassName()) {
      case 'Conv2D':
      case 'AtrousConv2D':
        macs += px(out) * out[3] * k * cin;
        break;
      case 'DepthwiseConv2D':
        macs += px(out) * out[3] * k;
        break;
      case 'SeparableConv2D':
        macs += px(out) * cin * (layer.depthMultiplier ?? 1) * k + px(out) * out[3] * cin * (layer.depthMultiplier ?? 1);
        break;
      case 'Conv2DTranspose': {
        const inp = (Array.isArray(inShape[0]) ? (inShape as number[][])[0] : (inShape as number[]));
        macs += px(inp) * cin * out[3] * k;
        break;
      }
      case 'Dense':
        macs += out.slice(1, -1).reduce((a, b) => a * b, 1) * out[out.length - 1] * cin;
        break;
    }
  }
  fixed.dispose();
  return macs;
}

if (isMainModule(module)) {
  // A check of the counting: one 3x3 conv 3->8 on 10x10 is 100 * 8 * 9 * 3 MACs.
  void (async () => {
    const x = tf.input({ shape: [null, null, 3] });
    const y = tf.layers.conv2d({ filters: 8, kernelSize: 3, padding: 'same' }).apply(x) as tf.SymbolicTensor;
    const z = tf.layers.depthwiseConv2d({ kernelSize: 3, padding: 'same' }).apply(y) as tf.SymbolicTensor;
    assert.equal(await modelMacs(tf.model({ inputs: x, outputs: z }), 10, 10), 100 * 8 * 9 * 3 + 100 * 8 * 9);
    console.log('ok');
  })();
}
