// Running the host tools (`ip`, `iptables`) the network layer needs: one place that shells out, with a timeout, and
// errors that say which command failed and what it printed.

import { execFile } from 'node:child_process';

export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export class CommandError extends Error {
  override readonly name = 'CommandError';
  constructor(
    message: string,
    readonly result: CommandResult,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Runs argv (no shell), feeding `input` on stdin when given; never rejects. */
export function run(argv: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<CommandResult> {
  const [file, ...args] = argv;
  if (file === undefined) return Promise.resolve({ code: 127, stdout: '', stderr: 'empty command' });
  return new Promise((resolve) => {
    const child = execFile(file, args, { timeout: opts.timeoutMs ?? 15_000, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error === null) return resolve({ code: 0, stdout, stderr });
      const code = typeof error.code === 'number' ? error.code : 1;
      resolve({ code, stdout, stderr: stderr === '' ? error.message : stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Runs argv and returns its stdout, or throws a CommandError naming the command. */
export async function must(argv: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
  const result = await run(argv, opts);
  if (result.code !== 0) {
    throw new CommandError(`${argv.join(' ')} failed (exit ${result.code}): ${result.stderr.trim()}`, result);
  }
  return result.stdout;
}

/** Runs several `ip` commands in one process (`ip -batch -`), in namespace `netns` when given. */
export function ipBatch(lines: readonly string[], netns?: string): Promise<string> {
  return must(['ip', ...(netns ? ['-n', netns] : []), '-batch', '-'], { input: `${lines.join('\n')}\n` });
}
