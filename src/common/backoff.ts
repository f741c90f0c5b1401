// The one jittered exponential backoff: the reflector, leader election, the work queue, NMI's startup taint and
// ARM retries all use it. Jitter is taken off the delay (never added), so no delay exceeds `maxMs`.
import { realClock, type Clock } from './clock.js';
import { errorMessage } from './errors.js';

export interface BackoffOptions {
  /** Delay before the first retry; default 500 ms. */
  readonly initialMs?: number;
  /** Upper bound of any delay (jitter included); default 30 s, as client-go's watch backoff. */
  readonly maxMs?: number;
  /** Growth per attempt; default 2. */
  readonly factor?: number;
  /** Fraction of the delay that is randomly taken off (0 = none, 1 = "full jitter"); default 0.2. */
  readonly jitter?: number;
  /** Source of randomness in [0, 1); injectable for tests. */
  readonly random?: () => number;
}

const DEFAULT_INITIAL_MS = 500;
const DEFAULT_MAX_MS = 30_000;

/**
 * Delay before retry number `attempt` (0-based): min(max, initial * factor^attempt), minus up to `jitter` of it,
 * so retries of many clients spread out but never exceed `maxMs`.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions): number {
  const factor = opts.factor ?? 2;
  const jitter = Math.min(1, Math.max(0, opts.jitter ?? 0.2));
  const random = opts.random ?? Math.random;
  const maxMs = opts.maxMs ?? DEFAULT_MAX_MS;
  const exp = Math.min(maxMs, (opts.initialMs ?? DEFAULT_INITIAL_MS) * Math.pow(factor, Math.max(0, attempt)));
  return Math.max(0, Math.round(exp * (1 - jitter * random())));
}

/** Stateful form: `next()` returns the next delay, `reset()` after a success. */
export class Backoff {
  private attempts = 0;

  constructor(private readonly opts: BackoffOptions = {}) {}

  next(): number {
    return backoffDelay(this.attempts++, this.opts);
  }

  reset(): void {
    this.attempts = 0;
  }

  get attempt(): number {
    return this.attempts;
  }
}

export interface RetryOptions extends BackoffOptions {
  /** Total attempts including the first; default unlimited. */
  readonly maxAttempts?: number;
  /** Decides whether an error is worth another attempt; default: every error. */
  readonly retryable?: (e: unknown) => boolean;
  /** A server-requested delay (e.g. Retry-After) overrides the computed one when larger. */
  readonly delayHint?: (e: unknown) => number | undefined;
  readonly signal?: AbortSignal;
  readonly clock?: Clock;
  /** Called before each wait, e.g. to log the failure. */
  readonly onRetry?: (info: { attempt: number; delayMs: number; error: unknown }) => void;
}

/** Runs `fn` until it succeeds, the error is not retryable, attempts run out, or the signal aborts. */
export async function retryWithBackoff<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const clock = opts.clock ?? realClock;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (error) {
      const last = opts.maxAttempts !== undefined && attempt + 1 >= opts.maxAttempts;
      if (last || opts.signal?.aborted || !(opts.retryable?.(error) ?? true)) {
        if (last && attempt > 0) throw new Error(`gave up after ${attempt + 1} attempts: ${errorMessage(error)}`, { cause: error });
        throw error;
      }
      const hint = opts.delayHint?.(error);
      const computed = backoffDelay(attempt, opts);
      const delayMs = hint !== undefined && hint > computed ? hint : computed;
      opts.onRetry?.({ attempt, delayMs, error });
      await clock.sleep(delayMs, opts.signal);
    }
  }
}
