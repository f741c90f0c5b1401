// A token bucket per caller (pod) for cache misses: every upstream fetch a pod's request starts costs one token, so
// one pod asking for many distinct resources cannot spend the node's IMDS/AAD throttling budget for everyone.

export interface MissLimitOptions {
  /** Tokens added per second (> 0). */
  readonly ratePerSecond: number;
  /** Bucket size: the misses a quiet pod may start at once (≥ 1). */
  readonly burst: number;
  /** Callers remembered at most; beyond it full (idle) buckets are forgotten first. */
  readonly maxCallers?: number;
}

interface Bucket {
  tokens: number;
  atMs: number;
}

export class PerCallerMissLimit {
  private readonly buckets = new Map<string, Bucket>();
  private readonly rate: number;
  private readonly burst: number;
  private readonly maxCallers: number;

  constructor(opts: MissLimitOptions) {
    this.rate = opts.ratePerSecond;
    this.burst = Math.max(1, opts.burst);
    this.maxCallers = Math.max(1, opts.maxCallers ?? 10_000);
  }

  /** Takes one token for `caller`: 0 when taken, else the milliseconds until one will be there (nothing taken). */
  take(caller: string, nowMs: number): number {
    let bucket = this.buckets.get(caller);
    if (bucket === undefined) {
      if (this.buckets.size >= this.maxCallers) this.sweep(nowMs);
      // Still full of busy callers: drop the oldest, which at worst hands that caller a fresh burst.
      if (this.buckets.size >= this.maxCallers) this.buckets.delete(this.buckets.keys().next().value as string);
      bucket = { tokens: this.burst, atMs: nowMs };
      this.buckets.set(caller, bucket);
    } else {
      bucket.tokens = this.level(bucket, nowMs);
      bucket.atMs = nowMs;
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil(((1 - bucket.tokens) * 1000) / this.rate));
  }

  /** Forgets callers whose bucket has refilled: they are no different from a caller never seen. */
  sweep(nowMs: number): void {
    for (const [caller, bucket] of this.buckets) if (this.level(bucket, nowMs) >= this.burst) this.buckets.delete(caller);
  }

  get size(): number {
    return this.buckets.size;
  }

  private level(bucket: Bucket, nowMs: number): number {
    return Math.min(this.burst, bucket.tokens + (Math.max(0, nowMs - bucket.atMs) * this.rate) / 1000);
  }
}
