// Child processes of the sandbox (MIC replicas, NMI per node): started with a command prefix (`ip netns exec <ns>`
// for a node), output appended to a log file, "ready" when a line on stdout satisfies the caller, stopped with
// SIGTERM then SIGKILL after a deadline. Nothing outlives stop().

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';

export interface ProcessSpec {
  readonly name: string;
  readonly argv: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** stdout and stderr are appended here. */
  readonly logFile: string;
  /** The process is ready when a stdout line satisfies this; undefined means ready once spawned. */
  readonly isReadyLine?: (line: string) => boolean;
  readonly readyTimeoutMs?: number;
}

export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  /** The stdout line that made it ready (empty without isReadyLine). */
  readonly readyLine: string;
  /** Resolves with the exit code (or null when killed by a signal) once the process is gone. */
  readonly exited: Promise<number | null>;
  running(): boolean;
  /** SIGTERM (or `signal`), then SIGKILL after `graceMs`; resolves when it has exited. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
}

export async function startProcess(spec: ProcessSpec, baseEnv: Readonly<Record<string, string | undefined>>): Promise<ManagedProcess> {
  const [file, ...args] = spec.argv;
  if (file === undefined) throw new Error(`${spec.name}: empty command`);
  const log: WriteStream = createWriteStream(spec.logFile, { flags: 'a' });
  const child: ChildProcess = spawn(file, args, {
    cwd: spec.cwd,
    env: { ...baseEnv, ...(spec.env ?? {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: a Ctrl-C at the terminal must not stop MIC/NMI behind the sandbox's back (stop() does).
    detached: true,
  });
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      exitCode = code;
      resolve(code);
    });
    child.once('error', () => {
      exitCode = 127;
      resolve(127);
    });
  });
  void exited.then(() => log.end());
  child.stderr?.pipe(log, { end: false });
  // The last lines, so a failure to start can say why without anyone opening the log.
  const tail: string[] = [];
  const remember = (line: string) => {
    tail.push(line.length > 400 ? `${line.slice(0, 400)}…` : line);
    if (tail.length > 12) tail.shift();
  };
  if (child.stderr) createInterface({ input: child.stderr }).on('line', remember);

  const readyLine = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${spec.name} was not ready within ${spec.readyTimeoutMs ?? 30_000} ms (log: ${spec.logFile})`)),
      spec.readyTimeoutMs ?? 30_000,
    );
    let ready = spec.isReadyLine === undefined;
    if (ready) {
      clearTimeout(timer);
      resolve('');
    }
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      log.write(`${line}\n`);
      remember(line);
      if (!ready && spec.isReadyLine?.(line)) {
        ready = true;
        clearTimeout(timer);
        resolve(line);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      if (!ready) reject(new Error(`${spec.name} exited with ${code} before it was ready (log: ${spec.logFile}):\n${tail.join('\n')}`));
    });
  }).catch(async (error: unknown) => {
    child.kill('SIGKILL');
    await exited;
    throw error;
  });

  const running = () => exitCode === undefined;
  return {
    name: spec.name,
    pid: child.pid ?? -1,
    readyLine,
    exited,
    running,
    async stop(signal = 'SIGTERM', graceMs = 15_000) {
      if (!running()) return exitCode ?? null;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Parses a JSON `ready` line (`{"ready":true,...}`) as the project's commands print it; null for any other line. */
export function parseReadyLine(line: string): Record<string, unknown> | null {
  if (!line.startsWith('{')) return null;
  try {
    const value: unknown = JSON.parse(line);
    if (typeof value === 'object' && value !== null && (value as { ready?: unknown }).ready === true) return value as Record<string, unknown>;
  } catch {
    // A log line that merely starts with a brace.
  }
  return null;
}
