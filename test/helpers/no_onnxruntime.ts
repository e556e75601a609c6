// A machine without onnxruntime-node, from outside the product: `noOnnxRuntimeEnv()` gives
// the environment that preloads this file (NODE_OPTIONS), which makes the child's
// require('onnxruntime-node') fail as an absent package does (MODULE_NOT_FOUND).
import Module from 'node:module';
import path from 'node:path';

/** The environment for a child (helpers/cli.ts `start`) in which onnxruntime-node is not installed. */
export function noOnnxRuntimeEnv(): NodeJS.ProcessEnv {
  // Under tsx the child loads modules through tsx's ESM loader, past Module._resolveFilename.
  if (path.extname(__filename) === '.ts') throw new Error('an absent onnxruntime-node is simulated in the compiled tests only: run them from dist/test');
  return { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${__filename}`.trim() };
}

// Preloaded (not imported by a test): hide the package.
if (require.main !== module && process.env.NODE_OPTIONS?.includes(__filename)) {
  const M = Module as unknown as { _resolveFilename(request: string, ...rest: unknown[]): string };
  const resolve = M._resolveFilename;
  M._resolveFilename = function (request: string, ...rest: unknown[]) {
    if (request === 'onnxruntime-node' || request.startsWith('onnxruntime-node/')) {
      const err = new Error(`Cannot find module '${request}'`) as NodeJS.ErrnoException;
      err.code = 'MODULE_NOT_FOUND';
      throw err;
    }
    return resolve.call(this, request, ...rest);
  };
}
