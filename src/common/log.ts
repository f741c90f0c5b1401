// Root logger factory. One JSON event per line by default (pino); `format: 'text'` gives a terse human line for
// local runs. Secrets never reach the output: token, secret, password and authorization keys are censored and
// client IDs are shortened the way the original does (`abcd##### REDACTED #####wxyz`).
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger } from 'pino';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export type LogFormat = 'json' | 'text';

export interface LoggerOptions {
  readonly level?: LogLevel;
  readonly format?: LogFormat;
  /** Fields on every line, e.g. { app: 'nmi', node }. */
  readonly base?: Readonly<Record<string, unknown>>;
  /** Where lines go; default stdout. Tests pass an in-memory sink. */
  readonly destination?: DestinationStream;
}

const SECRET_KEYS = [
  'token',
  'accessToken',
  'access_token',
  'refreshToken',
  'refresh_token',
  'idToken',
  'id_token',
  'secret',
  'clientSecret',
  'client_secret',
  'password',
  'assertion',
  'client_assertion',
  'authorization',
  'Authorization',
];
const CLIENT_ID_KEYS = ['clientID', 'clientId', 'client_id'];

/** Paths censored on every line: at the top level, one level down, and in request/response headers. */
export const REDACT_PATHS: readonly string[] = [
  ...SECRET_KEYS.flatMap((k) => [k, `*.${k}`]),
  ...['headers', 'req.headers', 'res.headers', '*.headers'].flatMap((h) => [
    `${h}.authorization`,
    `${h}.Authorization`,
    `${h}["x-ms-authorization-auxiliary"]`,
    `${h}["set-cookie"]`,
    `${h}.cookie`,
  ]),
  ...CLIENT_ID_KEYS.flatMap((k) => [k, `*.${k}`]),
  // Upstream response bodies ride on errors (err.body) and may hold tokens.
  'err.body',
  '*.err.body',
];

export function createLogger(opts: LoggerOptions = {}): Logger {
  const destination = opts.destination ?? pino.destination({ dest: 1, sync: false });
  return pino(
    {
      level: opts.level ?? 'info',
      base: { ...(opts.base ?? {}) },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: [...REDACT_PATHS], censor },
    },
    opts.format === 'text' ? textStream(destination) : destination,
  );
}

/** Stdout as pino writes it (buffered); share one between loggers so that their lines never interleave. */
export function stdoutDestination(): DestinationStream & { flushSync(): void } {
  return pino.destination({ dest: 1, sync: false });
}

/**
 * A file lines are appended to (its directory created). Opened here, synchronously, so that a path that cannot be
 * written is an error now, with its cause, rather than an 'error' event later.
 */
export function fileDestination(path: string): DestinationStream & { flushSync(): void } {
  mkdirSync(dirname(path), { recursive: true });
  closeSync(openSync(path, 'a'));
  return pino.destination({ dest: path, append: true, sync: false });
}

/** A component logger: every line carries `component`. */
export function child(logger: Logger, component: string, bindings: Record<string, unknown> = {}): Logger {
  return logger.child({ component, ...bindings });
}

/** A logger that drops everything (default for library code given no logger). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

function censor(value: unknown, path: string[]): unknown {
  const key = path[path.length - 1] ?? '';
  if (CLIENT_ID_KEYS.includes(key) && typeof value === 'string') return shortenClientID(value);
  return '[REDACTED]';
}

/** Same rule as crds/names.ts redactClientID (common does not import crds). */
function shortenClientID(id: string): string {
  if (id === '') return '';
  const m = /^(\S{4})[\s\S]*(\S{4})$/.exec(id);
  return m ? `${m[1]}##### REDACTED #####${m[2]}` : '##### REDACTED #####';
}

/** Rewrites pino's JSON lines as `time LEVEL [component] msg key=value ...`. */
function textStream(out: DestinationStream): DestinationStream {
  return {
    write(line: string): void {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        out.write(line);
        return;
      }
      const { time, level, component, msg, ...rest } = entry;
      const fields = Object.entries(rest)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      const head = [String(time ?? ''), String(level ?? '').toUpperCase(), component ? `[${String(component)}]` : '']
        .filter((s) => s !== '')
        .join(' ');
      out.write(`${head} ${String(msg ?? '')}${fields ? ` ${fields}` : ''}\n`);
    },
  };
}
