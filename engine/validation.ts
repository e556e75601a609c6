// Validation during training and the metric that picks best/.
import assert from 'node:assert/strict';
import type * as tf from '../backends/tf';
import type { PairRef, ResolvedDataset } from '../loaders/registry';
import type { Config } from '../utils/config';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { evalOptionsFrom, evaluateSplit, EvalResult } from './evaluator';

/**
 * Scores the validation split without test-time augmentation (it multiplies validation
 * time; the final report uses it), keeping the first few overlays for TensorBoard.
 */
export function validate(model: tf.LayersModel, cfg: Config, valPairs: PairRef[], keepOverlays = 0, dataset?: ResolvedDataset): Promise<EvalResult> {
  return evaluateSplit(model, cfg, valPairs, { ...evalOptionsFrom(cfg), tta: [], scales: [1], keepOverlays, dataset });
}

/** Reads 'val.mIoU' style names out of a validation result. */
export function metricValue(name: string, res: EvalResult): number {
  const key = name.replace(/^val\./, '');
  const v = res.metrics[key];
  if (v === undefined) {
    throw new UserError(`checkpoint.best_metric '${name}' is not a validation metric; available: ${Object.keys(res.metrics).map((k) => 'val.' + k).join(', ')}`);
  }
  return v;
}

/** Higher is better for every validation metric reported. */
export function improves(value: number, best: number | null): boolean {
  return best === null || value > best;
}

export const selfTest: SelfTest = {
  'best_metric names a metric with or without val.; an unknown one lists the choices'() {
    const res = { metrics: { mIoU: 0.5, dice: 0.7 } } as unknown as EvalResult;
    assert.equal(metricValue('val.dice', res), 0.7);
    assert.equal(metricValue('mIoU', res), 0.5);
    assert.throws(() => metricValue('val.dcie', res), /not a validation metric; available: val\.mIoU, val\.dice/);
  },
  'the first value, then only higher ones, improve'() {
    assert.ok(improves(0.1, null));
    assert.ok(improves(0.2, 0.1));
    assert.ok(!improves(0.1, 0.1));
  },
};

runIfMain(module, selfTest);
