// Deduplicating keyed work queue (client-go's workqueue semantics): a key waits at most once, is never processed by
// two workers at once, and a key re-added while it is being processed is processed again afterwards.
import { backoffDelay } from '../common/backoff.js';
import { realClock, type Clock } from '../common/clock.js';
import { silentLogger, type Logger } from '../common/log.js';

export interface ProcessResult {
  /** Process the key again after this delay (a periodic resync), without counting a failure. */
  readonly requeueAfterMs?: number;
}

export interface WorkQueueOptions {
  /** Handles one key. A rejection re-adds the key with per-key exponential backoff; success forgets its failures. */
  readonly process: (key: string) => Promise<void | ProcessResult>;
  /** Number of concurrent workers (default 1). */
  readonly workers?: number;
  /** First retry delay for a failing key (default 5 ms, as client-go's item limiter). */
  readonly baseDelayMs?: number;
  /** Retry delay ceiling (default 1000 s, as client-go; MIC usually wants far less). */
  readonly maxDelayMs?: number;
  /** Give up re-adding a key after this many consecutive failures (default: never). */
  readonly maxRetries?: number;
  readonly log?: Logger;
  readonly name?: string;
  /** Time source of delayed adds (default: the real clock). */
  readonly clock?: Clock;
}

export class WorkQueue {
  readonly #opts: WorkQueueOptions;
  readonly #log: Logger;
  readonly #queue: string[] = [];
  readonly #dirty = new Set<string>();
  readonly #processing = new Set<string>();
  readonly #failures = new Map<string, number>();
  readonly #clock: Clock;
  readonly #delayed = new Map<string, { at: number; cancel: AbortController }>();
  #waiters: Array<(key: string | undefined) => void> = [];
  #idleWaiters: Array<() => void> = [];
  #workers: Promise<void>[] = [];
  #shuttingDown = false;
  #draining = false;

  constructor(opts: WorkQueueOptions) {
    this.#opts = opts;
    this.#clock = opts.clock ?? realClock;
    this.#log = (opts.log ?? silentLogger()).child({ component: 'workqueue', queue: opts.name ?? 'default' });
  }

  /** Starts the workers. Nothing runs (no timer, no worker) before this call. */
  start(): void {
    if (this.#workers.length > 0 || this.#shuttingDown) return;
    const n = Math.max(1, this.#opts.workers ?? 1);
    for (let i = 0; i < n; i++) this.#workers.push(this.#worker());
  }

  /** Queues `key` unless it is already waiting. */
  add(key: string): void {
    if (this.#shuttingDown) return;
    if (this.#dirty.has(key)) return;
    this.#dirty.add(key);
    if (this.#processing.has(key)) return; // queued again when its current processing ends
    this.#push(key);
  }

  /** Queues `key` after `ms`; if it is already scheduled, the earlier time wins. */
  addAfter(key: string, ms: number): void {
    if (this.#shuttingDown) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = this.#clock.now() + ms;
    const existing = this.#delayed.get(key);
    if (existing && existing.at <= at) return;
    existing?.cancel.abort();
    const cancel = new AbortController();
    this.#delayed.set(key, { at, cancel });
    this.#clock.sleep(ms, cancel.signal).then(
      () => {
        if (this.#delayed.get(key)?.cancel !== cancel) return;
        this.#delayed.delete(key);
        this.add(key);
      },
      () => undefined, // cancelled: replaced by an earlier time, or shut down
    );
  }

  /** Queues `key` after a delay that doubles with each consecutive failure of that key. */
  addRateLimited(key: string): void {
    const failures = (this.#failures.get(key) ?? 0) + 1;
    this.#failures.set(key, failures);
    const initialMs = this.#opts.baseDelayMs ?? 5;
    const maxMs = this.#opts.maxDelayMs ?? 1_000_000;
    // No jitter, as client-go's per-item limiter: base * 2^(failures-1), capped.
    this.addAfter(key, backoffDelay(failures - 1, { initialMs, maxMs, jitter: 0 }));
  }

  /** Clears the failure count of `key` (its next rate-limited add starts from the base delay). */
  forget(key: string): void {
    this.#failures.delete(key);
  }

  numRequeues(key: string): number {
    return this.#failures.get(key) ?? 0;
  }

  /** Keys waiting to be processed (not counting delayed ones). */
  get length(): number {
    return this.#queue.length;
  }

  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** Resolves when nothing is queued or being processed (delayed adds are not waited for). */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Stops accepting keys and cancels delayed adds. With `drain: true` (default) the keys already queued are still
   * processed; otherwise they are dropped. Resolves when every worker has returned.
   */
  async shutDown(opts: { drain?: boolean } = {}): Promise<void> {
    this.#shuttingDown = true;
    this.#draining = opts.drain ?? true;
    for (const { cancel } of this.#delayed.values()) cancel.abort();
    this.#delayed.clear();
    if (!this.#draining) {
      for (const key of this.#queue) this.#dirty.delete(key);
      this.#queue.length = 0;
    }
    this.#wakeIfDone();
    await Promise.all(this.#workers);
    this.#notifyIdle();
  }

  async #worker(): Promise<void> {
    for (;;) {
      const key = await this.#next();
      if (key === undefined) return;
      this.#processing.add(key);
      this.#dirty.delete(key);
      try {
        const result = await this.#opts.process(key);
        this.forget(key);
        if (result && result.requeueAfterMs !== undefined) this.addAfter(key, result.requeueAfterMs);
      } catch (err) {
        this.#onFailure(key, err);
      } finally {
        this.#done(key);
      }
    }
  }

  #onFailure(key: string, err: unknown): void {
    const failures = this.numRequeues(key) + 1;
    const max = this.#opts.maxRetries;
    if (max !== undefined && failures > max) {
      this.#log.error({ key, err, failures }, 'giving up on key after repeated failures');
      this.forget(key);
      return;
    }
    this.#log.warn({ key, err, failures }, 'processing failed, retrying with backoff');
    this.addRateLimited(key);
  }

  #next(): Promise<string | undefined> {
    const key = this.#queue.shift();
    if (key !== undefined) return Promise.resolve(key);
    if (this.#shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #push(key: string): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(key);
    else this.#queue.push(key);
  }

  #done(key: string): void {
    this.#processing.delete(key);
    if (this.#dirty.has(key)) {
      if (this.#shuttingDown && !this.#draining) this.#dirty.delete(key);
      else this.#push(key);
    }
    this.#wakeIfDone();
    this.#notifyIdle();
  }

  // During shutdown, idle workers are told to return once nothing is left for them.
  #wakeIfDone(): void {
    if (!this.#shuttingDown || this.#queue.length > 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w(undefined);
  }

  #isIdle(): boolean {
    return this.#queue.length === 0 && this.#processing.size === 0;
  }

  #notifyIdle(): void {
    if (!this.#isIdle()) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }
}
