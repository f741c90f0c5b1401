// Clock port: code that waits or stamps times takes a Clock, so tests drive time by hand instead of sleeping.
import { abortReason } from './errors.js';

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolves after `ms`; rejects with the abort reason if `signal` aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: abortableSleep,
};

/** setTimeout as a promise that an AbortSignal can cancel (the timer is cleared, nothing is left pending). */
export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortReason(signal));
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortReason(signal as AbortSignal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Sleeps `ms` on `clock`, resolving `true` when the time passed and `false` as soon as `signal` aborts. It never
 * rejects, so an abandoned sleep cannot become an unhandled rejection, and it leaves no timer behind.
 */
export function sleep(ms: number, signal?: AbortSignal, clock: Clock = realClock): Promise<boolean> {
  return clock.sleep(ms, signal).then(
    () => true,
    (error: unknown) => {
      if (signal?.aborted) return false;
      throw error;
    },
  );
}

interface PendingSleep {
  readonly at: number;
  readonly seq: number;
  readonly resolve: () => void;
}

/** A clock that moves only when told to: `advance(ms)` wakes, in deadline order, every sleep that is due. */
export class ManualClock implements Clock {
  private current: number;
  private seq = 0;
  private pending: PendingSleep[] = [];

  constructor(startMs = 0) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise((resolve, reject) => {
      const entry: PendingSleep = {
        at: this.current + Math.max(0, ms),
        seq: this.seq++,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        this.pending = this.pending.filter((p) => p !== entry);
        reject(abortReason(signal as AbortSignal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.push(entry);
    });
  }

  /**
   * Moves time forward by `ms`, stepping through every deadline on the way: each due sleep is woken at its own
   * time and its continuation runs (and may sleep again) before time moves on. Await it before looking at the world.
   */
  async advance(ms: number): Promise<void> {
    const target = this.current + Math.max(0, ms);
    await settle();
    for (;;) {
      const next = this.pending
        .filter((p) => p.at <= target)
        .sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (next === undefined) break;
      this.current = Math.max(this.current, next.at);
      this.pending = this.pending.filter((p) => p !== next);
      next.resolve();
      await settle();
    }
    this.current = target;
  }

  /** Number of sleeps not yet woken. */
  pendingSleeps(): number {
    return this.pending.length;
  }
}

/** One macrotask turn: every microtask queued before it (promise chains of any depth) has run. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
