// When training stops early: SIGINT/SIGTERM (finish the step, save last/, exit; a
// second signal leaves at once), training.time_limit, and a step limit for tests.
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../utils/self_test';

export interface StopOptions {
  /** Seconds of training after which to stop (0 = none). */
  timeLimit: number;
  /** Stop (as if interrupted) once this global step is reached (tests of resume). */
  stopAtStep?: number;
  /** Told of the first signal, e.g. to say what happens next. */
  onSignal?: (signal: string) => void;
}

export class StopConditions {
  /** The signal (or 'stop' for stopAtStep) that asked to stop, if any. */
  signal: string | null = null;
  private readonly started = Date.now();
  private readonly handlers: [NodeJS.Signals, () => void][] = [];

  constructor(private readonly opts: StopOptions) {}

  /** Catches SIGINT and SIGTERM until dispose(). */
  install(): this {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      const h = () => this.onSignal(sig);
      process.on(sig, h);
      this.handlers.push([sig, h]);
    }
    return this;
  }

  private onSignal(sig: string): void {
    if (this.signal) process.exit(130); // second Ctrl-C: leave now; the last checkpoint stays loadable
    this.signal = sig;
    this.opts.onSignal?.(sig);
  }

  /** Called after each step. */
  afterStep(step: number): void {
    if (this.opts.stopAtStep !== undefined && step >= this.opts.stopAtStep) this.signal = this.signal ?? 'stop';
  }

  get requested(): boolean {
    return this.signal !== null;
  }

  elapsedSeconds(): number {
    return (Date.now() - this.started) / 1000;
  }

  timeUp(): boolean {
    return this.opts.timeLimit > 0 && this.elapsedSeconds() >= this.opts.timeLimit;
  }

  dispose(): void {
    for (const [sig, h] of this.handlers) process.off(sig, h);
    this.handlers.length = 0;
  }
}

export const selfTest: SelfTest = {
  'a step limit asks to stop without being a signal'() {
    const seen: string[] = [];
    const s = new StopConditions({ timeLimit: 0, stopAtStep: 3, onSignal: (x) => seen.push(x) });
    s.afterStep(2);
    assert.equal(s.requested, false);
    s.afterStep(3);
    assert.equal(s.signal, 'stop');
    assert.deepEqual(seen, []);
    assert.equal(s.timeUp(), false, 'no time limit');
    const limited = new StopConditions({ timeLimit: 0.001 });
    const t0 = Date.now();
    while (Date.now() < t0 + 2); // let a millisecond pass
    assert.equal(limited.timeUp(), true);
  },
  'SIGTERM asks to stop once; dispose removes the handlers'() {
    const seen: string[] = [];
    const before = process.listenerCount('SIGTERM');
    const t = new StopConditions({ timeLimit: 0, onSignal: (x) => seen.push(x) }).install();
    assert.equal(process.listenerCount('SIGTERM'), before + 1);
    process.emit('SIGTERM', 'SIGTERM');
    assert.equal(t.signal, 'SIGTERM');
    assert.deepEqual(seen, ['SIGTERM']);
    t.dispose();
    assert.equal(process.listenerCount('SIGTERM'), before);
  },
};

runIfMain(module, selfTest);
