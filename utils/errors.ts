// User-facing failures: bad config, bad data, bad checkpoints. The CLI prints
// their message as one line and exits non-zero, never with a stack trace.
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/** Runs a CLI entry point; turns any error into one readable line and exit code 1. */
export async function runCli(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    console.error(`error: ${describeError(err)}`);
    if (!(err instanceof UserError) && process.env.SEMSEG_DEBUG) console.error((err as Error).stack);
    process.exit(1);
  }
}

export function describeError(err: unknown): string {
  if (err instanceof UserError) return err.message;
  if (err instanceof Error) {
    const msg = err.message.split('\n')[0];
    return `${msg} (internal error; set SEMSEG_DEBUG=1 for the stack trace)`;
  }
  return String(err);
}
