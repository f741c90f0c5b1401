// Every line a pod can cause (refused requests, refused connections, the node identity served) is logged at most once
// per caller and message every 10 s, with the count of those not logged: a pod flooding NMI (each request with new
// pod-chosen resource and client_id values, up to 2,048 characters each) must not turn into a flood of log lines that
// rotates other pods' audit records off the node.

import type { Logger } from 'pino';
import type { Clock } from '../common/clock.js';

const WINDOW_MS = 10_000;
const MAX_KEYS = 4096;

/** The parts of a logger a limited line is written to (a pino logger, or one whose bindings are made lazily). */
export interface LineSink {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export class LogLimiter {
  private readonly last = new Map<string, { atMs: number; suppressed: number }>();
  constructor(private readonly clock: Clock) {}

  /**
   * Writes `msg` to `to` unless this caller had it written within the window; `remote`: adds `remote: caller`.
   * True when written (what else is limited with the line, e.g. an event, follows it).
   */
  log(caller: string, to: LineSink | Logger, fields: Readonly<Record<string, unknown>>, msg: string, level: 'warn' | 'info' | 'debug' = 'warn', remote = false): boolean {
    const key = `${caller}\u0000${msg}`;
    const t = this.clock.now();
    const seen = this.last.get(key);
    if (seen !== undefined && t - seen.atMs < WINDOW_MS) {
      seen.suppressed++;
      return false;
    }
    if (this.last.size >= MAX_KEYS) this.last.clear();
    this.last.set(key, { atMs: t, suppressed: 0 });
    const extra = { ...(remote ? { remote: caller } : {}), ...fields, ...(seen && seen.suppressed > 0 ? { notLogged: seen.suppressed } : {}) };
    to[level](extra, msg);
    return true;
  }
}
