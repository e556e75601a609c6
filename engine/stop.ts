// When training stops early: SIGINT/SIGTERM (finish the step, save last/, exit; a
// second signal leaves at once), training.time_limit, and a step limit for tests.
//
// Node runs signal handlers on the main thread's event loop, which a long synchronous
// wasm kernel blocks, and which steps that only await settled promises never yield:
// the handler would run steps later. So a watchdog worker thread watches the same
// signals on its own event loop and marks them in shared memory, and the main thread
// reads the mark after every step (afterStep): the run stops after the current step.
// If no step has finished and the main thread has not answered within the grace
// period plus twice the longest step so far (it is stuck in one step), or right after
// a second signal, the watchdog ends the process (SIGKILL: the only way a worker can
// end its process). Checkpoints are written atomically, so last/ keeps the previous
// save, and the run lock of a process that is gone is taken over by the next run
// (engine/run_lock.ts). Under npx the watchdog also notices when npx is gone
// (its shell does not pass SIGTERM on) and stops the run as on SIGTERM.
import assert from 'node:assert/strict';
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { exitWith } from '../utils/exit';
import { runIfMain, SelfTest } from '../utils/self_test';

// Who handles SIGINT/SIGTERM: the commands do (set by utils/errors.ts runCli); a host program
// using the library keeps them unless it passes handleSignals: true (api/options.ts), and
// stops a run with an AbortSignal instead. Without it, nothing here exits or kills the process.
let signalsOwned = true;

/** Whether this package installs signal handlers (and the watchdog) for the work it runs. */
export function setSignalHandling(on: boolean): void {
  signalsOwned = on;
}

/**
 * A signal this soon after the first is the same Ctrl-C, not a second one: the terminal
 * signals the whole process group, and a parent that forwards signals (npm/npx, whose
 * shell is bash on macOS or with script-shell=bash, starts us as its direct child)
 * delivers it again milliseconds later.
 */
export const SAME_SIGNAL_MS = 500;

/** Seconds the main thread has to answer a first signal; SEMSEG_STOP_GRACE_S overrides it (tests). */
export function graceSeconds(): number {
  const v = Number(process.env.SEMSEG_STOP_GRACE_S);
  return Number.isFinite(v) && v > 0 ? v : 10;
}

// CommonJS source of the watchdog thread. process.binding('signal_wrap') is the one way
// to watch a signal off the main thread (workers get no process.on signals); where a
// later Node lacks it, the watchdog does nothing and the main-thread handler remains.
const WATCHDOG = `
const { workerData } = require('node:worker_threads');
const fs = require('node:fs');
// [0]: 1 once the main thread answered; [1]: the signal's number, for the main thread;
// [2]: steps finished; [3]: the longest step so far, ms.
const state = new Int32Array(workerData.shared);
const say = (s) => { try { fs.writeSync(2, s + '\\n'); } catch {} };
const end = (s) => { say(s); process.kill(process.pid, 'SIGKILL'); };
// Claims a saved copy only when one exists.
const kept = () => workerData.kept && fs.existsSync(workerData.kept) ? workerData.kept + ' keeps the last save' : 'no checkpoint had been saved yet';
let Signal;
try { process.noDeprecation = true; Signal = process.binding('signal_wrap').Signal; } catch { Signal = null; }
let seen = 0;
let first = 0;
if (Signal) for (const [name, num] of workerData.signals) {
  const w = new Signal();
  w.onsignal = () => {
    if (seen && Date.now() - first < workerData.sameMs) return; // the same Ctrl-C, forwarded by a parent
    if (++seen === 1) {
      first = Date.now();
      Atomics.store(state, 1, num);
      let steps = Atomics.load(state, 2);
      // The grace, plus twice the longest step so far: a big step is not a stuck one.
      const wait = () => workerData.grace + 2 * Atomics.load(state, 3) / 1000;
      let waited = wait();
      const check = () => {
        if (Atomics.load(state, 0) !== 0) return; // answered: the main thread saves and exits
        const now = Atomics.load(state, 2);
        if (now !== steps) { steps = now; setTimeout(check, (waited = wait()) * 1000); return; } // steps still finish
        end('error: ' + name + ': the current step did not finish within ' + Math.round(waited) + ' s (a long kernel); stopped without saving; ' + kept());
      };
      setTimeout(check, waited * 1000);
    } else {
      // The main thread exits at once (130) if it can; if it is stuck, end it here.
      setTimeout(() => end('error: ' + name + ' again: stopped without saving; ' + kept()), Atomics.load(state, 0) ? 1000 : 0);
    }
  };
  w.start(num);
}
// Started by npx/npm (a shell between them and us): when they are stopped, the shell dies
// without passing the signal on, and we would train on, orphaned, holding the run lock.
if (workerData.ppid) {
  const t = setInterval(() => {
    if (process.ppid === workerData.ppid) return;
    clearInterval(t);
    say('warning: the parent process (' + workerData.parent + ') is gone; stopping as on SIGTERM');
    process.kill(process.pid, 'SIGTERM');
  }, 1000);
}
`;

/** 'SIGTERM' for its number. */
function signalName(num: number): string {
  return Object.entries(os.constants.signals).find(([, n]) => n === num)?.[0] ?? `signal ${num}`;
}

export interface StopOptions {
  /** Seconds of training after which to stop (0 = none). */
  timeLimit: number;
  /** Told of the first signal, e.g. to say what happens next. */
  onSignal?: (signal: string) => void;
  /** Named by the watchdog when it ends a stuck run (the folder that keeps the last save). */
  keptDir?: string;
  /** Stops the run after the current step, as a signal would (signal 'abort'). */
  abort?: AbortSignal;
}

export class StopConditions {
  /** The signal ('abort' for the abort signal) that asked to stop, if any. */
  signal: string | null = null;
  private readonly started = Date.now();
  private readonly handlers: [NodeJS.Signals, () => void][] = [];
  /** [0]: 1 once the main thread has answered a signal (the watchdog then waits for it); [1]: a signal the watchdog saw; [2]: steps finished; [3]: the longest step, ms. */
  private readonly shared = new Int32Array(new SharedArrayBuffer(16));
  private lastStepEnd = Date.now();
  private watchdog: Worker | null = null;

  constructor(private readonly opts: StopOptions) {}

  /** Catches SIGINT and SIGTERM until dispose(), with the watchdog for a stuck main thread. */
  install(): this {
    if (!signalsOwned) return this; // the host's signals: it stops the run with `abort`
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      const h = () => this.onProcessSignal(sig);
      process.on(sig, h);
      this.handlers.push([sig, h]);
    }
    const signals = (['SIGINT', 'SIGTERM'] as const).map((n) => [n, os.constants.signals[n]]);
    // npm sets npm_command for what it starts (npx: 'exec'); a plain `node dist/train.js &` may outlive its shell on purpose.
    const ppid = process.env.npm_command ? process.ppid : 0;
    const parent = process.env.npm_command === 'exec' ? 'npx' : `npm ${process.env.npm_command ?? ''}`.trim();
    this.watchdog = new Worker(WATCHDOG, { eval: true, workerData: { shared: this.shared.buffer, signals, sameMs: SAME_SIGNAL_MS, grace: graceSeconds(), kept: this.opts.keptDir ?? '', ppid, parent } });
    this.watchdog.unref(); // never what keeps the process alive
    this.watchdog.on('error', () => {}); // a watchdog that failed to start leaves the main-thread handler
    return this;
  }

  /** Signals delivered to this thread's handler (afterStep may have answered the first one already). */
  private delivered = 0;

  private firstDelivered = 0;

  private onProcessSignal(sig: string): void {
    if (this.delivered && Date.now() - this.firstDelivered < SAME_SIGNAL_MS) return; // the same Ctrl-C, forwarded
    // Second Ctrl-C: leave now (a GPU device is released first, within a second); the last checkpoint stays loadable.
    if (++this.delivered > 1) return void exitWith(130, 1000);
    this.firstDelivered = Date.now();
    if (!this.signal) this.onSignal(sig);
  }

  private onSignal(sig: string): void {
    Atomics.store(this.shared, 0, 1); // answered: the watchdog leaves the stop to this thread
    this.signal = sig;
    this.opts.onSignal?.(sig);
  }

  /** Called after each step: a signal the watchdog saw stops the run here, whatever the event loop did. */
  afterStep(): void {
    const now = Date.now();
    // Time since the previous step ended: the step plus its data, an upper bound the watchdog allows for.
    Atomics.store(this.shared, 3, Math.max(Atomics.load(this.shared, 3), Math.min(now - this.lastStepEnd, 2 ** 30)));
    this.lastStepEnd = now;
    Atomics.add(this.shared, 2, 1);
    const seen = Atomics.load(this.shared, 1);
    if (seen && !this.signal) this.onSignal(signalName(seen));
    if (this.opts.abort?.aborted && !this.signal) this.onSignal('abort');
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
    // Its signal watchers would otherwise keep SIGINT from ending the process by default.
    void this.watchdog?.terminate();
    this.watchdog = null;
  }
}

/**
 * Catches SIGINT and SIGTERM while short work runs that must not be cut midway (an
 * evaluation publishing its results): the first calls `onFirst`, which asks the work to
 * stop at its next check; a second leaves at once (the work's temporary files are hidden
 * and cleaned by the next run). Returns the function that removes the handlers.
 */
export function catchSignals(onFirst: (signal: NodeJS.Signals) => void): () => void {
  if (!signalsOwned) return () => {}; // the host's signals: it decides what they end
  let seen = 0;
  let first = 0;
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((sig) => {
    const h = () => {
      if (seen && Date.now() - first < SAME_SIGNAL_MS) return; // the same Ctrl-C, forwarded
      if (++seen === 1) {
        first = Date.now();
        return onFirst(sig);
      }
      void exitWith(128 + os.constants.signals[sig], 1000);
    };
    process.on(sig, h);
    return [sig, h] as const;
  });
  return () => {
    for (const [sig, h] of handlers) process.off(sig, h);
  };
}

export const selfTest: SelfTest = {
  'without a signal or abort nothing asks to stop; a time limit runs out'() {
    const seen: string[] = [];
    const s = new StopConditions({ timeLimit: 0, onSignal: (x) => seen.push(x) });
    s.afterStep();
    s.afterStep();
    assert.equal(s.requested, false);
    assert.deepEqual(seen, []);
    assert.equal(s.timeUp(), false, 'no time limit');
    const limited = new StopConditions({ timeLimit: 0.001 });
    const t0 = Date.now();
    while (Date.now() < t0 + 2); // let a millisecond pass
    assert.equal(limited.timeUp(), true);
  },
  'an abort signal stops after the step; without signal handling nothing is installed'() {
    const ac = new AbortController();
    const before = process.listenerCount('SIGINT');
    setSignalHandling(false);
    try {
      const s = new StopConditions({ timeLimit: 0, abort: ac.signal }).install();
      assert.equal(process.listenerCount('SIGINT'), before, 'no handler');
      catchSignals(() => {})();
      assert.equal(process.listenerCount('SIGINT'), before);
      s.afterStep();
      assert.equal(s.requested, false);
      ac.abort();
      s.afterStep();
      assert.equal(s.signal, 'abort');
      s.dispose();
    } finally {
      setSignalHandling(true);
    }
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
    const asked: string[] = [];
    const release = catchSignals((s) => asked.push(s));
    process.emit('SIGINT', 'SIGINT');
    assert.deepEqual(asked, ['SIGINT']);
    release();
    assert.equal(process.listenerCount('SIGTERM'), before);
  },
  'a copy of the signal within SAME_SIGNAL_MS (npx forwarding the terminal\'s) is the same one, not a second'() {
    // A second one would exit this process (130): getting past the emits is the check.
    const seen: string[] = [];
    const t = new StopConditions({ timeLimit: 0, onSignal: (x) => seen.push(x) }).install();
    try {
      process.emit('SIGINT', 'SIGINT');
      process.emit('SIGINT', 'SIGINT');
      assert.deepEqual(seen, ['SIGINT']);
    } finally {
      t.dispose();
    }
    const asked: string[] = [];
    const release = catchSignals((sig) => asked.push(sig));
    process.emit('SIGTERM', 'SIGTERM');
    process.emit('SIGTERM', 'SIGTERM');
    release();
    assert.deepEqual(asked, ['SIGTERM']);
  },
};

runIfMain(module, selfTest);
