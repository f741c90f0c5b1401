// Token cache keyed by (identity key, resource): tokens ready before the pod asks, one upstream call per key at a time,
// and never a token served under a key other than the one it was fetched for.
//
// Decisions (documented here because callers depend on them):
// - Keys compare exactly (a JSON pair, so no separator can make two different pairs collide).
// - A token is served only while `now < expiresOn - expirySkewMs`; past that the entry is a miss and is refetched.
// - Refresh is due at the earlier of `refreshFraction` of the lifetime and `refreshBeforeExpiryMs` before expiry.
//   A hit on a due entry returns the cached (still valid) token and starts one background refresh. `refreshDue()`
//   (or the `start()` timer) does the same without a caller. A failed background refresh keeps the old token and is
//   retried after `refreshRetryMs`.
// - Failures are shared by every waiter of the flight that failed. Only `upstream` failures (IMDS/AAD answered with an
//   error status) are remembered, for `negativeTtlMs` (default 2 s), so a crash-looping pod cannot hammer IMDS;
//   transport failures are never remembered (the next request tries again). `invalidate` clears both kinds.
// - `maxEntries: 0` turns the cache off (`--token-cache-size=0`): nothing is stored or remembered, every request goes
//   upstream and prefetch does nothing; concurrent identical requests still share the one upstream call under way.
// - An invalidation during a fetch wins: that fetch's result reaches the callers already waiting on it, but is not stored.
// - Tenants share the node's upstream budget fairly: a caller (pod) that starts a fetch (a miss not joining one under
//   way) spends a token of its own bucket (`missLimit`), refused with a `throttled` error when empty; and at most
//   `maxConcurrentFetches` upstream calls run at once, the others queued in arrival order. Refreshes and prefetches
//   charge nobody but take a slot.
import type { Logger } from 'pino';
import { PerCallerMissLimit, type MissLimitOptions } from './miss-limit.js';
import { TokenError, type Token } from './types.js';
import { realClock } from '../../common/clock.js';

export type TokenFetcher = () => Promise<readonly Token[]>;

export interface TokenCacheOptions {
  /** Most (identity, resource) entries kept; the least recently used is evicted beyond it. 0: no caching. */
  readonly maxEntries?: number;
  /** Refresh once this fraction of the token's lifetime has passed (0 < f ≤ 1). */
  readonly refreshFraction?: number;
  /** …or once the token is this close to expiry, whichever comes first. */
  readonly refreshBeforeExpiryMs?: number;
  /** A token with less than this left is treated as expired and never served. */
  readonly expirySkewMs?: number;
  /** How long an `upstream` failure is remembered; 0 disables negative caching. */
  readonly negativeTtlMs?: number;
  /** An entry no caller used for this long is dropped instead of refreshed (default 1 h). */
  readonly idleTtlMs?: number;
  /** Wait after a failed background refresh before trying again. */
  readonly refreshRetryMs?: number;
  /** Upstream (IMDS/AAD) calls running at once at most; more wait their turn (default 16). */
  readonly maxConcurrentFetches?: number;
  /** Per-caller bucket for fetches a caller starts; absent: no per-caller limit. */
  readonly missLimit?: MissLimitOptions;
  /** Milliseconds since the epoch; injectable for tests. */
  readonly now?: () => number;
  readonly logger?: Logger;
}

export interface TokenCacheStats {
  readonly hits: number;
  readonly misses: number;
  /** Callers that joined a fetch already under way instead of starting one. */
  readonly coalesced: number;
  readonly upstreamCalls: number;
  readonly upstreamFailures: number;
  readonly refreshes: number;
  readonly refreshFailures: number;
  readonly negativeHits: number;
  readonly evictions: number;
  /** Misses refused because their caller's miss bucket was empty. */
  readonly throttled: number;
  /** Upstream calls waiting for a slot right now. */
  readonly queuedFetches: number;
  readonly entries: number;
}

interface Entry {
  readonly identityKey: string;
  readonly resource: string;
  readonly tokens: readonly Token[];
  readonly expiresAtMs: number;
  readonly refreshAtMs: number;
  nextRefreshTryMs: number;
  /** Last time a caller was served from this entry (or when it was first fetched). */
  lastUsedMs: number;
  readonly fetcher: TokenFetcher;
}

interface Flight {
  readonly identityKey: string;
  readonly promise: Promise<readonly Token[]>;
}

interface Negative {
  readonly identityKey: string;
  readonly error: TokenError;
  readonly untilMs: number;
}

export class TokenCache {
  private readonly entries = new Map<string, Entry>();
  private readonly flights = new Map<string, Flight>();
  private readonly negatives = new Map<string, Negative>();
  private readonly keys = new CacheKeys();
  private readonly maxEntries: number;
  private readonly idleTtlMs: number;
  private readonly refreshFraction: number;
  private readonly refreshBeforeExpiryMs: number;
  private readonly expirySkewMs: number;
  private readonly negativeTtlMs: number;
  private readonly refreshRetryMs: number;
  private readonly now: () => number;
  private readonly logger: Logger | undefined;
  private readonly maxConcurrentFetches: number;
  private readonly missLimit: PerCallerMissLimit | undefined;
  private activeFetches = 0;
  private readonly fetchQueue: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private counters = {
    hits: 0,
    misses: 0,
    coalesced: 0,
    upstreamCalls: 0,
    upstreamFailures: 0,
    refreshes: 0,
    refreshFailures: 0,
    negativeHits: 0,
    evictions: 0,
    throttled: 0,
  };

  constructor(opts: TokenCacheOptions = {}) {
    this.maxEntries = Math.max(0, Math.floor(opts.maxEntries ?? 10_000));
    this.refreshFraction = Math.min(1, Math.max(0.01, opts.refreshFraction ?? 0.5));
    this.refreshBeforeExpiryMs = Math.max(0, opts.refreshBeforeExpiryMs ?? 5 * 60_000);
    this.expirySkewMs = Math.max(0, opts.expirySkewMs ?? 30_000);
    this.negativeTtlMs = Math.max(0, opts.negativeTtlMs ?? 2_000);
    this.refreshRetryMs = Math.max(0, opts.refreshRetryMs ?? 30_000);
    this.idleTtlMs = Math.max(1, opts.idleTtlMs ?? 60 * 60_000);
    this.now = opts.now ?? realClock.now;
    this.logger = opts.logger;
    this.maxConcurrentFetches = Math.max(1, opts.maxConcurrentFetches ?? 16);
    this.missLimit = opts.missLimit && opts.missLimit.ratePerSecond > 0 ? new PerCallerMissLimit(opts.missLimit) : undefined;
  }

  /**
   * The tokens for (identityKey, resource): cached if still valid, else from `fetcher` (one call per key at a time).
   * `caller` (a pod) pays for a fetch it starts; a caller over its miss limit gets a `throttled` TokenError.
   */
  async get(identityKey: string, resource: string, fetcher: TokenFetcher, caller?: string): Promise<readonly Token[]> {
    const key = this.keys.of(identityKey, resource);
    const now = this.now();
    const entry = this.entries.get(key);
    if (entry && this.servable(entry, now)) {
      this.counters.hits++;
      this.touch(key, entry, now);
      if (now >= entry.refreshAtMs && now >= entry.nextRefreshTryMs) this.refreshInBackground(key, entry, fetcher);
      return entry.tokens;
    }
    if (entry) this.entries.delete(key); // expired: never served
    const negative = this.negatives.get(key);
    if (negative) {
      if (now < negative.untilMs) {
        this.counters.negativeHits++;
        throw negative.error;
      }
      this.negatives.delete(key);
    }
    this.counters.misses++;
    const flight = this.flights.get(key);
    if (flight) {
      this.counters.coalesced++;
      return flight.promise;
    }
    if (caller !== undefined && this.missLimit !== undefined) {
      const waitMs = this.missLimit.take(caller, now);
      if (waitMs > 0) {
        this.counters.throttled++;
        throw new TokenError('throttled', 'too many new token requests from this pod (token cache misses); retry later', { retryAfterMs: waitMs });
      }
    }
    return this.startFlight(key, identityKey, resource, fetcher).promise;
  }

  /**
   * The cached tokens for (identityKey, resource) if they can be served now, without waiting: `get`'s hit branch,
   * synchronous (NMI's warm path). Starts the background refresh when due, as `get` does. Undefined on a miss.
   */
  peek(identityKey: string, resource: string, fetcher: TokenFetcher): readonly Token[] | undefined {
    const key = this.keys.of(identityKey, resource);
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    const now = this.now();
    if (!this.servable(entry, now)) return undefined;
    this.counters.hits++;
    this.touch(key, entry, now);
    if (now >= entry.refreshAtMs && now >= entry.nextRefreshTryMs) this.refreshInBackground(key, entry, fetcher);
    return entry.tokens;
  }

  /** Fetch ahead of the first request, unless a valid token or a fetch is already there. Never rejects. */
  async prefetch(identityKey: string, resource: string, fetcher: TokenFetcher): Promise<void> {
    if (this.disabled) return; // a prefetched token would have nowhere to go
    const key = cacheKey(identityKey, resource);
    const entry = this.entries.get(key);
    if (entry && this.servable(entry, this.now())) return;
    const flight = this.flights.get(key) ?? this.startFlight(key, identityKey, resource, fetcher);
    try {
      await flight.promise;
    } catch (err) {
      this.logger?.warn({ err, identity: identityKey, resource }, 'token prefetch failed');
    }
  }

  /** Forget every token, failure and pending fetch result of one identity. Returns the number of entries dropped. */
  invalidate(identityKey: string): number {
    return this.invalidateWhere((k) => k === identityKey);
  }

  /** Forget everything for the identity keys the predicate selects (e.g. every version of one AzureIdentity). */
  invalidateWhere(selects: (identityKey: string) => boolean): number {
    let dropped = 0;
    for (const [key, e] of this.entries) {
      if (selects(e.identityKey)) {
        this.entries.delete(key);
        dropped++;
      }
    }
    for (const [key, f] of this.flights) if (selects(f.identityKey)) this.flights.delete(key);
    for (const [key, n] of this.negatives) if (selects(n.identityKey)) this.negatives.delete(key);
    return dropped;
  }

  /** Drop expired entries and start a background refresh for each due one. Returns how many refreshes started. */
  refreshDue(): number {
    const now = this.now();
    let started = 0;
    for (const [key, e] of this.entries) {
      if (!this.servable(e, now)) {
        this.entries.delete(key);
        continue;
      }
      // Nobody asked for it in a long while (a pod gone, a prefetch never used): stop refreshing it.
      if (now - e.lastUsedMs > this.idleTtlMs) {
        this.entries.delete(key);
        this.counters.evictions++;
        continue;
      }
      if (now >= e.refreshAtMs && now >= e.nextRefreshTryMs && !this.flights.has(key)) {
        this.refreshInBackground(key, e, e.fetcher);
        started++;
      }
    }
    for (const [key, n] of this.negatives) if (now >= n.untilMs) this.negatives.delete(key);
    this.missLimit?.sweep(now);
    return started;
  }

  /** Run `refreshDue()` every `intervalMs` (the timer does not keep the process alive). */
  start(intervalMs: number): void {
    this.stop();
    this.timer = setInterval(() => this.refreshDue(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  stats(): TokenCacheStats {
    return { ...this.counters, queuedFetches: this.fetchQueue.length, entries: this.entries.size };
  }

  get size(): number {
    return this.entries.size;
  }

  /** `maxEntries: 0`: every request goes upstream. */
  get disabled(): boolean {
    return this.maxEntries === 0;
  }

  private servable(e: Entry, now: number): boolean {
    return now < e.expiresAtMs - this.expirySkewMs;
  }

  private touch(key: string, e: Entry, now: number): void {
    e.lastUsedMs = now;
    // Map keeps insertion order: re-inserting makes this the most recently used.
    this.entries.delete(key);
    this.entries.set(key, e);
  }

  private refreshInBackground(key: string, entry: Entry, fetcher: TokenFetcher): void {
    if (this.flights.has(key)) return;
    this.counters.refreshes++;
    const flight = this.startFlight(key, entry.identityKey, entry.resource, fetcher);
    flight.promise.catch((err: unknown) => {
      this.counters.refreshFailures++;
      entry.nextRefreshTryMs = this.now() + this.refreshRetryMs;
      this.logger?.warn(
        { err, identity: entry.identityKey, resource: entry.resource },
        'background token refresh failed; serving the cached token until it expires',
      );
    });
  }

  private startFlight(key: string, identityKey: string, resource: string, fetcher: TokenFetcher): Flight {
    this.counters.upstreamCalls++;
    // Assigned right below; the async body only reads it after its first await.
    let flight!: Flight;
    const promise = (async () => {
      await this.fetchSlot();
      let tokens: readonly Token[];
      try {
        // A fetcher that throws synchronously still settles this flight.
        tokens = await fetcher();
      } finally {
        this.releaseFetchSlot();
      }
      if (this.flights.get(key) === flight) this.store(key, identityKey, resource, tokens, fetcher);
      return tokens;
    })();
    flight = { identityKey, promise };
    this.flights.set(key, flight);
    promise.then(
      () => {
        if (this.flights.get(key) === flight) this.flights.delete(key);
      },
      (err: unknown) => {
        this.counters.upstreamFailures++;
        if (this.flights.get(key) !== flight) return; // invalidated meanwhile: remember nothing
        this.flights.delete(key);
        if (this.negativeTtlMs > 0 && !this.disabled && err instanceof TokenError && err.kind === 'upstream') {
          this.negatives.set(key, { identityKey, error: err, untilMs: this.now() + this.negativeTtlMs });
          this.trim(this.negatives);
        }
      },
    );
    return flight;
  }

  private fetchSlot(): Promise<void> | undefined {
    if (this.activeFetches < this.maxConcurrentFetches) {
      this.activeFetches++;
      return undefined;
    }
    return new Promise((resolve) => this.fetchQueue.push(resolve));
  }

  private releaseFetchSlot(): void {
    const next = this.fetchQueue.shift();
    // The slot passes straight to the next in line: activeFetches stays the same.
    if (next !== undefined) next();
    else this.activeFetches--;
  }

  private store(key: string, identityKey: string, resource: string, tokens: readonly Token[], fetcher: TokenFetcher): void {
    if (tokens.length === 0 || this.disabled) return;
    const fetchedAtMs = this.now();
    const expiresAtMs = Math.min(...tokens.map((t) => t.expiresOn * 1000));
    const entry: Entry = {
      identityKey,
      resource,
      tokens,
      expiresAtMs,
      refreshAtMs: refreshPoint(fetchedAtMs, expiresAtMs, this.refreshFraction, this.refreshBeforeExpiryMs),
      nextRefreshTryMs: 0,
      // A refresh keeps the entry's idle clock: only callers reset it.
      lastUsedMs: this.entries.get(key)?.lastUsedMs ?? fetchedAtMs,
      fetcher,
    };
    this.negatives.delete(key);
    // Already unservable (e.g. upstream handed out a nearly expired token): give it to the waiters, keep nothing.
    if (!this.servable(entry, fetchedAtMs)) {
      this.entries.delete(key);
      return;
    }
    this.entries.delete(key);
    this.entries.set(key, entry);
    this.counters.evictions += this.trim(this.entries);
  }

  private trim(map: Map<string, unknown>): number {
    let evicted = 0;
    while (map.size > this.maxEntries) {
      const oldest = map.keys().next();
      if (oldest.done) break;
      map.delete(oldest.value);
      evicted++;
    }
    return evicted;
  }
}

function cacheKey(identityKey: string, resource: string): string {
  return JSON.stringify([identityKey, resource]);
}

/** The entry keys of recent (identity, resource) pairs, so that a hit builds no string (bounded: cleared when full). */
class CacheKeys {
  private readonly byIdentity = new Map<string, Map<string, string>>();
  private size = 0;

  of(identityKey: string, resource: string): string {
    let forIdentity = this.byIdentity.get(identityKey);
    const known = forIdentity?.get(resource);
    if (known !== undefined) return known;
    if (this.size >= 16_384) {
      this.byIdentity.clear();
      this.size = 0;
      forIdentity = undefined;
    }
    if (forIdentity === undefined) this.byIdentity.set(identityKey, (forIdentity = new Map()));
    const key = cacheKey(identityKey, resource);
    forIdentity.set(resource, key);
    this.size++;
    return key;
  }
}

/** When a token fetched at `fetchedAtMs` and expiring at `expiresAtMs` is due for refresh. */
export function refreshPoint(fetchedAtMs: number, expiresAtMs: number, fraction: number, beforeExpiryMs: number): number {
  const lifetime = Math.max(0, expiresAtMs - fetchedAtMs);
  const byFraction = fetchedAtMs + lifetime * fraction;
  // For tokens shorter-lived than the margin, the margin alone would make every hit a refresh.
  return lifetime > beforeExpiryMs ? Math.min(byFraction, expiresAtMs - beforeExpiryMs) : byFraction;
}
