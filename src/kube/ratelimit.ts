// Client-side QPS/burst limiting: client-node has none, and MIC must not flood the API server with writes.
import { realClock } from '../common/clock.js';

export interface RateLimiterOptions {
  /** Sustained requests per second; 0 or less disables limiting. */
  readonly qps: number;
  /** Requests allowed at once after an idle period (bucket size, at least 1). */
  readonly burst: number;
  /** Injected for tests. */
  readonly now?: () => number;
}

/**
 * Token bucket, as client-go's `flowcontrol.NewTokenBucketRateLimiter(qps, burst)`.
 * Waiters are served in arrival order: each one reserves a token (the balance may go negative) and sleeps until
 * the bucket has refilled to cover it.
 */
export class RateLimiter {
  readonly qps: number;
  readonly burst: number;
  readonly #now: () => number;
  #tokens: number;
  #last: number;

  constructor(opts: RateLimiterOptions) {
    this.qps = opts.qps;
    this.burst = Math.max(1, Math.floor(opts.burst));
    this.#now = opts.now ?? realClock.now;
    this.#tokens = this.burst;
    this.#last = this.#now();
  }

  /** Takes a token if one is available now. */
  tryAcquire(): boolean {
    if (this.qps <= 0) return true;
    this.#refill();
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Milliseconds the next `acquire()` would wait (0 when a token is available). */
  reserveDelayMs(): number {
    if (this.qps <= 0) return 0;
    this.#refill();
    return this.#tokens >= 1 ? 0 : Math.ceil(((1 - this.#tokens) / this.qps) * 1000);
  }

  /** Waits for a token. Rejects with the signal's reason if aborted (and gives the reserved token back). */
  acquire(signal?: AbortSignal): Promise<void> {
    if (this.qps <= 0) return Promise.resolve();
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    this.#refill();
    this.#tokens -= 1;
    if (this.#tokens >= 0) return Promise.resolve();
    const waitMs = Math.ceil((-this.#tokens / this.qps) * 1000);
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        clearTimeout(timer);
        this.#tokens += 1;
        reject(abortReason(signal));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, waitMs);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Runs `fn` once a token is available. */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.acquire(signal);
    return fn();
  }

  /** Wraps an async function so that every call goes through the limiter. */
  wrap<A extends unknown[], R>(fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
    return async (...args: A) => {
      await this.acquire();
      return fn(...args);
    };
  }

  #refill(): void {
    const now = this.#now();
    const elapsed = Math.max(0, now - this.#last);
    this.#last = now;
    this.#tokens = Math.min(this.burst, this.#tokens + (elapsed / 1000) * this.qps);
  }
}

function abortReason(signal: AbortSignal | undefined): unknown {
  return signal?.reason ?? new DOMException('The operation was aborted', 'AbortError');
}
