// Fault injection into one training step of a child process, from outside the product:
// `stepFaultEnv(fault)` gives the environment that preloads this file (NODE_OPTIONS),
// which wraps engine/train_step's makeTrainStep when the trainer loads it. The fault
// runs inside the step, where a real one would: the trainer's handling is what is tested.
//
// SEMSEG_STEP_FAULT: busy@STEP:MS (a synchronous busy loop of MS ms, as a long wasm
// kernel blocks the thread; busy@STEP+:MS in every step from STEP on), oom@STEP (a wasm
// out-of-memory abort) or gpu@STEP (a real webgpu validation error); STEP is the global
// step, from 1.
import Module from 'node:module';
import path from 'node:path';

const ENV = 'SEMSEG_STEP_FAULT';

/** The environment for a child (see helpers/cli.ts `start`) whose training meets `fault`. */
export function stepFaultEnv(fault: string): NodeJS.ProcessEnv {
  // Under tsx the child loads modules through tsx's ESM loader, past Module._load: not hooked yet.
  if (path.extname(__filename) === '.ts') throw new Error('step faults are injected in the compiled tests only: run them from dist/test');
  const preload = __filename;
  return { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${preload}`.trim(), [ENV]: fault };
}

type StepFn = ((batch: unknown, globalStep?: number) => Promise<number>) & { dispose(): void };

function inject(fault: string, step: number, engineDir: string): void {
  const m = /^(busy|oom|gpu)@(\d+)(\+)?(?::(\d+))?$/.exec(fault);
  if (!m) throw new Error(`${ENV}=${fault}: expected busy@STEP[+][:MS], oom@STEP or gpu@STEP`);
  if (m[3] ? step < Number(m[2]) : Number(m[2]) !== step) return;
  if (m[1] === 'oom') throw new Error('Aborted(OOM). Build with -sASSERTIONS for more info.');
  if (m[1] === 'gpu') {
    // The product's own modules, from the trainer's folder: the same instances it uses.
    const { provokeDeviceError } = require(path.join(engineDir, '..', 'backends', 'webgpu_errors'));
    return void provokeDeviceError().dispose();
  }
  const until = Date.now() + Number(m[4] ?? 60_000);
  while (Date.now() < until); // deliberately blocks the event loop
}

/** Wraps makeTrainStep in the train_step module once it is loaded. */
function install(fault: string): void {
  const mod = Module as unknown as { _load: (request: string, parent: { filename?: string } | null, isMain: boolean) => unknown };
  const load = mod._load;
  let done = false;
  mod._load = function (request, parent, isMain) {
    const exported = load.call(this, request, parent, isMain) as { makeTrainStep?: (...a: unknown[]) => StepFn };
    if (!done && /(^|[\\/])train_step$/.test(request) && parent?.filename && /[\\/]engine[\\/]trainer\.[jt]s$/.test(parent.filename)) {
      done = true;
      const engineDir = path.dirname(parent.filename);
      const make = exported.makeTrainStep!;
      exported.makeTrainStep = (...args: unknown[]) => {
        const inner = make(...args);
        const step = (batch: unknown, globalStep?: number) => {
          inject(fault, (globalStep ?? 0) + 1, engineDir); // the trainer always passes the global step
          return inner(batch, globalStep);
        };
        return Object.assign(step, { dispose: () => inner.dispose() });
      };
    }
    return exported;
  };
}

if (process.env[ENV]) install(process.env[ENV]);
