// CLI plumbing shared by the emulator entry points: flag errors exit 2, one JSON `ready` line on stdout,
// a clean stop on SIGINT/SIGTERM, and a fatal error printed with its cause.
import { errorMessage, errorText } from '../../src/common/errors.js';
import { onStopSignals } from '../../src/common/signals.js';

/** Runs `parse` on the command-line arguments; on an error prints its message and exits 2. */
export function parseArgvOrExit<T>(parse: (argv: readonly string[]) => T): T {
  try {
    return parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${errorMessage(err)}\n`);
    process.exit(2);
  }
}

/** Parses a --port value: an integer from 0 (any free port) to 65535. */
export function parsePort(value: string | undefined): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port: not a port number: ${value}`);
  return port;
}

/** Prints `ready` as one JSON line, then stops `server` on the first SIGINT/SIGTERM (later ones wait for it) and exits 0 (1 if it fails). */
export function serveUntilSignal(server: { stop(): Promise<void> }, ready: Readonly<Record<string, unknown>>): void {
  process.stdout.write(`${JSON.stringify({ ready: true, ...ready })}\n`);
  onStopSignals(() => {
    server.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`stop failed: ${errorText(err)}\n`);
        process.exit(1);
      },
    );
  });
}

/** Runs `main`; if it fails, prints `<name> failed:` with the stack (and the cause, when there is one) and exits 1. */
export function runMain(name: string, main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    process.stderr.write(`${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    if (err instanceof Error && err.cause) process.stderr.write(`cause: ${String(err.cause instanceof Error ? err.cause.message : err.cause)}\n`);
    process.exit(1);
  });
}
