// The `module` the project's files hand to runIfMain (utils/self_test.ts), for the browser
// bundle (esbuild's inject puts it where a file uses the global): in the page no file is
// the main module, so no self-test runs there. It imports nothing, so that it is set before
// any module that uses it runs (self_test.ts and the assert shim import each other).
const pageModule = { filename: '/web_train.bundle.js' };
export { pageModule as module };

/** test/self_tests.test.ts runs it; the file cannot call runIfMain (see above). */
export const selfTest = {
  'names the bundle, which is never the main module'() {
    if (pageModule.filename !== '/web_train.bundle.js') throw new Error(`module.filename is ${pageModule.filename}`);
  },
};
