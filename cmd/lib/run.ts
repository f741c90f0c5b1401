// Runs a command-line entry: real process streams and environment, the exit code, a crash printed with its cause.

import type { CliIo } from './explain-cli.js';

export function runCli(name: string, main: (args: readonly string[], io: CliIo) => Promise<number>): void {
  const io: CliIo = { env: process.env, stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) };
  main(process.argv.slice(2), io).then(
    // exit, not exitCode: SDK agents and credentials may keep sockets open (stdout to a pipe is synchronous on Linux).
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`${name}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(1);
    },
  );
}
