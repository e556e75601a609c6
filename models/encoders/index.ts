// Encoders (backbones) shared by decoders, as segmentation_models.pytorch shares them:
// DeepLabV3+ and FPN take `model.encoder: <name>`. An encoder is one file in this folder,
// <name>.ts, registering an EncoderDefinition (found by its file name on first use), with
// its pretrained weights as data on the entry (`pretrained`, as smp's pretrained_settings).
import * as tf from '../../backends/tf';
import assert from 'node:assert/strict';
import { z } from 'zod';
import type { NamedTensor } from '../../storage/format';
import { UserError } from '../../utils/errors';
import { FolderRegistry } from '../../utils/folder_registry';
import { runIfMain, SelfTest } from '../../utils/self_test';

export type T = tf.SymbolicTensor;

export interface EncoderOptions {
  /** 32: five stride-2 stages. 16: the last stage keeps stride 16 (no dilation). */
  outputStride: 16 | 32;
  /** Seeds the weight initialisation (training.seed). */
  seed: number;
  /** Prefix of every layer name, e.g. 'enc': names stay stable across builds. */
  prefix: string;
}

/** Feature maps from fine to coarse, with their strides (2, 4, 8, 16, 32 or 16) and widths. */
export interface Features {
  maps: T[];
  strides: number[];
  channels: number[];
}

export interface EncoderDefinition {
  name: string;
  build(x: T, o: EncoderOptions): Features;
  /** Widths of the five feature maps, without building. */
  channels: number[];
  /** Trainable parameters for this many input channels. */
  paramCount(inChannels: number): number;
  /** Floats of every layer output (the input excluded) for one h x w sample. */
  activationFloats(inChannels: number, height: number, width: number, o: Pick<EncoderOptions, 'outputStride'>): number;
  /**
   * Pretrained weights by source name (`model.encoder_weights: <source>`, e.g. imagenet):
   * a loader of the weights named for the encoder built with `prefix`.
   */
  pretrained?: Record<string, (prefix: string) => Promise<NamedTensor[]>>;
}

// Encoders by file name in this folder; these files are not encoders.
const encoders = new FolderRegistry<EncoderDefinition>(__dirname, new Set(['index', 'imagenet', 'resnet']), (name, known) => `model.encoder '${name}' is not a registered encoder; registered: ${known.join(', ')}`);

export function registerEncoder<E extends EncoderDefinition>(e: E): E {
  encoders.register(e);
  return e;
}

/** Names of the encoders in this folder (and any registered from elsewhere). */
export function registeredEncoders(): string[] {
  return encoders.names();
}

/** The encoders in this folder when it was loaded (self-tests that build each). */
export const ENCODER_NAMES = registeredEncoders() as [string, ...string[]];

export function getEncoder(name: string): EncoderDefinition {
  return encoders.get(name);
}

/** `model.encoder` of the models over an encoder: a registered encoder's name. */
export const encoderOption = z.string().superRefine((name, ctx) => {
  const known = registeredEncoders();
  if (!known.includes(name)) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `not a registered encoder; registered: ${known.join(', ')}` });
});

/** Whether `model.encoder_weights` names a pretrained source of some registered encoder (e.g. imagenet), not a path. */
export function isPretrainedSource(source: string): boolean {
  return registeredEncoders().some((n) => getEncoder(n).pretrained?.[source]);
}

/**
 * The weights of `model.encoder_weights` when it names a pretrained source of some
 * registered encoder (e.g. imagenet), else null (it is a path). A source the model's
 * encoder lacks is a UserError naming the encoders that have it.
 */
export function pretrainedWeights(model: Record<string, unknown>, source: string, prefix = 'enc'): Promise<NamedTensor[]> | null {
  if (!isPretrainedSource(source)) return null;
  const having = registeredEncoders().filter((n) => getEncoder(n).pretrained?.[source]);
  const encoder = model.encoder;
  const load = typeof encoder === 'string' && registeredEncoders().includes(encoder) ? getEncoder(encoder).pretrained?.[source] : undefined;
  if (!load) {
    const which = typeof encoder === 'string' ? `encoder '${encoder}'` : 'this model (it has no model.encoder)';
    throw new UserError(`model.encoder_weights: '${source}' weights exist for encoder ${having.join(', ')} only, not for ${which}; give a checkpoint folder or model.json instead`);
  }
  return load(prefix);
}

/**
 * `model.frozen_stages` of the models over an encoder: how many of its five stages (the
 * layers up to each feature map, from the input) keep the weights they start with. Meant
 * for `encoder_weights`: pretrained filters stay as learned on ImageNet instead of being
 * fitted to a few training scenes, and their backward pass is never computed.
 */
export const frozenStagesOption = z.number().int().min(0).max(5).default(0);

/**
 * Marks every layer that computes the first `stages` feature maps not trainable: their
 * weights leave the model's trainable set (the optimizer never sees them, and backprop
 * stops at the first trainable layer). Their batch norms still normalise by batch
 * statistics when training (tfjs's `trainable = false` keeps the training-mode path),
 * which keeps the pretrained filters usable whatever the input normalisation.
 */
export function freezeStages(f: Features, stages: number): void {
  if (stages === 0) return;
  const seen = new Set<tf.layers.Layer>();
  const todo: T[] = [f.maps[stages - 1]];
  while (todo.length) {
    const t = todo.pop()!;
    if (seen.has(t.sourceLayer)) continue;
    seen.add(t.sourceLayer);
    todo.push(...t.sourceLayer.inboundNodes[t.nodeIndex].inputTensors);
  }
  for (const layer of seen) layer.trainable = false;
}

/** Spatial size of a map at `stride` for an input of `size` ('same' strides round up). */
export const sizeAt = (size: number, stride: number) => Math.ceil(size / stride);

export const selfTest: SelfTest = {
  'every listed encoder builds maps at its strides with its widths'() {
    for (const name of ENCODER_NAMES) {
      const e = getEncoder(name);
      for (const outputStride of [32, 16] as const) {
        const f = e.build(tf.input({ shape: [37, 51, 3] }), { outputStride, seed: 0, prefix: `t_${name}_${outputStride}` });
        assert.deepEqual(f.strides, [2, 4, 8, 16, outputStride], name);
        assert.deepEqual(f.channels, e.channels, name);
        f.maps.forEach((m, i) => assert.deepEqual(m.shape, [null, sizeAt(37, f.strides[i]), sizeAt(51, f.strides[i]), f.channels[i]], `${name} map ${i}`));
      }
    }
    assert.throws(() => getEncoder('vgg16'), /model\.encoder 'vgg16' is not a registered encoder; registered: mobilenet_v2, resnet18, resnet34/);
    assert.throws(() => getEncoder('resnet'), /is not a registered encoder/);
  },
  'pretrained weights are asked of the encoder entry; a path is none of them'() {
    assert.equal(pretrainedWeights({ encoder: 'resnet18' }, 'ckpts/run'), null);
    assert.deepEqual([isPretrainedSource('imagenet'), isPretrainedSource('ckpts/run')], [true, false]);
    assert.throws(() => pretrainedWeights({ encoder: 'resnet18' }, 'imagenet'), /^UserError: model\.encoder_weights: 'imagenet' weights exist for encoder mobilenet_v2 only, not for encoder 'resnet18'/);
    assert.throws(() => pretrainedWeights({}, 'imagenet'), /not for this model \(it has no model\.encoder\)/);
    assert.equal(typeof getEncoder('mobilenet_v2').pretrained?.imagenet, 'function');
  },
  'freezeStages leaves exactly the layers up to that feature map untrainable'() {
    const input = tf.input({ shape: [32, 32, 3] });
    const f = getEncoder('mobilenet_v2').build(input, { outputStride: 16, seed: 0, prefix: 'fz' });
    const model = tf.model({ inputs: input, outputs: f.maps });
    const trainable = () => new Set(model.trainableWeights.map((w) => w.originalName.split('_')[1]));
    const all = trainable();
    freezeStages(f, 2); // stem and blocks 1-3 (the stride-2 and stride-4 maps)
    const left = trainable();
    assert.deepEqual([...all].filter((b) => !left.has(b)).sort(), ['block1', 'block2', 'block3', 'stem']);
    assert.ok(left.has('block4') && left.has('block17'));
    model.dispose();
  },
};

runIfMain(module, selfTest);
