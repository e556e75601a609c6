// Stops an in-process train() after a chosen global step the way a library user would:
// by aborting its abortSignal from onStep (the run finishes that step, saves last/ and
// comes back interrupted, ready to resume).
import type { TrainOptions } from '../../engine/trainer';

export function stopAt(step: number): Pick<TrainOptions, 'abortSignal' | 'onStep'> {
  const stop = new AbortController();
  return { abortSignal: stop.signal, onStep: (s) => s.step >= step && stop.abort() };
}
