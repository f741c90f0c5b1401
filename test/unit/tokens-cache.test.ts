import { describe, expect, it } from 'vitest';
import { TokenCache, refreshPoint } from '../../src/nmi/tokens/cache.js';
import { TokenError, type Token } from '../../src/nmi/tokens/types.js';

/** A clock the test moves by hand (ms). */
function manualClock(startMs = 1_700_000_000_000) {
  let t = startMs;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

function token(tag: string, expiresOnSec: number, resource = 'https://vault.azure.net'): Token {
  return { accessToken: `tok-${tag}`, expiresOn: expiresOnSec, resource, tokenType: 'Bearer' };
}

/** A promise the test resolves when it chooses, to hold a fetch open. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const flush = () => new Promise<void>((r) => setImmediate(r));

describe('TokenCache', () => {
  it('collapses 200 concurrent misses for one key into exactly one upstream call, and every waiter gets its result', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now });
    const gate = deferred<readonly Token[]>();
    let calls = 0;
    const fetcher = () => {
      calls++;
      return gate.promise;
    };
    const waiters = Array.from({ length: 200 }, () => cache.get('ns/a@u#1', 'r', fetcher));
    await flush();
    expect(calls).toBe(1);
    const fetched = [token('one', clock.now() / 1000 + 3600)];
    gate.resolve(fetched);
    const results = await Promise.all(waiters);
    for (const r of results) expect(r).toBe(fetched);
    expect(calls).toBe(1);
    const s = cache.stats();
    expect(s.upstreamCalls).toBe(1);
    expect(s.misses).toBe(200);
    expect(s.coalesced).toBe(199);
    // and the next caller is a plain hit
    await expect(cache.get('ns/a@u#1', 'r', fetcher)).resolves.toBe(fetched);
    expect(calls).toBe(1);
    expect(cache.stats().hits).toBe(1);
  });

  it('never serves a token under another key, with many keys fetched concurrently', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now });
    const exp = clock.now() / 1000 + 3600;
    const identities = Array.from({ length: 40 }, (_, i) => `ns/id${i}@u${i}#1`);
    const resources = ['https://vault.azure.net', 'https://vault.azure.net/', 'https://storage.azure.com'];
    const calls = new Map<string, number>();
    const requests: Promise<void>[] = [];
    for (let round = 0; round < 5; round++) {
      for (const id of identities) {
        for (const res of resources) {
          requests.push(
            (async () => {
              // Random completion order, so results of different keys interleave.
              const got = await cache.get(id, res, async () => {
                const k = `${id}|${res}`;
                calls.set(k, (calls.get(k) ?? 0) + 1);
                await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 5)));
                return [token(`${id}|${res}`, exp, res)];
              });
              expect(got).toHaveLength(1);
              expect(got[0]?.accessToken).toBe(`tok-${id}|${res}`);
              expect(got[0]?.resource).toBe(res);
            })(),
          );
        }
      }
    }
    await Promise.all(requests);
    expect(calls.size).toBe(identities.length * resources.length);
    for (const n of calls.values()) expect(n).toBe(1);
  });

  it('keys that would collide under naive concatenation stay apart', async () => {
    const cache = new TokenCache({ now: manualClock().now });
    const exp = 1_700_000_000 + 3600;
    await cache.get('a|b', 'c', async () => [token('first', exp)]);
    const second = await cache.get('a', 'b|c', async () => [token('second', exp)]);
    expect(second[0]?.accessToken).toBe('tok-second');
  });

  it('refreshes in the background once past the refresh point, serving the still-valid token meanwhile', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now, refreshFraction: 0.5, refreshBeforeExpiryMs: 5 * 60_000 });
    const t0 = clock.now() / 1000;
    let calls = 0;
    const gate = deferred<readonly Token[]>();
    const fetcher = async (): Promise<readonly Token[]> => {
      calls++;
      return calls === 1 ? [token('old', t0 + 3600)] : gate.promise;
    };
    await cache.get('k', 'r', fetcher);
    clock.advance(29 * 60_000); // before half-life: plain hit, no refresh
    expect((await cache.get('k', 'r', fetcher))[0]?.accessToken).toBe('tok-old');
    expect(calls).toBe(1);
    clock.advance(2 * 60_000); // past half-life
    expect((await cache.get('k', 'r', fetcher))[0]?.accessToken).toBe('tok-old');
    expect((await cache.get('k', 'r', fetcher))[0]?.accessToken).toBe('tok-old');
    expect(calls).toBe(2); // one background refresh, not one per hit
    gate.resolve([token('new', t0 + 3600 + 31 * 60)]);
    await flush();
    expect((await cache.get('k', 'r', fetcher))[0]?.accessToken).toBe('tok-new');
    expect(cache.stats().refreshes).toBe(1);
  });

  it('refreshDue() refreshes due entries without a caller, so the next request is a hit on a fresh token', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now });
    const t0 = clock.now() / 1000;
    let n = 0;
    const fetcher = async () => [token(`v${++n}`, clock.now() / 1000 + 3600)];
    await cache.get('k', 'r', fetcher);
    expect(cache.refreshDue()).toBe(0);
    clock.advance(40 * 60_000);
    expect(cache.refreshDue()).toBe(1);
    await flush();
    const got = await cache.get('k', 'r', fetcher);
    expect(got[0]?.accessToken).toBe('tok-v2');
    expect(got[0]?.expiresOn).toBeGreaterThan(t0 + 3600);
    expect(n).toBe(2);
  });

  it('stops refreshing an entry no caller used within idleTtlMs, and background refreshes do not count as use', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now, idleTtlMs: 70 * 60_000 });
    let n = 0;
    const fetcher = async () => [token(`v${++n}`, clock.now() / 1000 + 3600)];
    await cache.prefetch('idle', 'r', fetcher);
    await cache.get('used', 'r', fetcher);
    clock.advance(40 * 60_000);
    expect(cache.refreshDue()).toBe(2);
    await flush();
    clock.advance(40 * 60_000);
    await cache.get('used', 'r', fetcher); // a caller: the idle clock of 'used' restarts (and it refreshes, being due)
    await flush();
    // 80 min since 'idle' was fetched, refreshed once in the background, never used: dropped although still valid.
    const evictions = cache.stats().evictions;
    expect(cache.refreshDue()).toBe(0);
    expect(cache.stats().evictions).toBe(evictions + 1);
    expect(cache.stats().entries).toBe(1);
    const served = n;
    await cache.get('used', 'r', fetcher);
    expect(n).toBe(served);
    const before = n;
    await cache.get('idle', 'r', fetcher);
    expect(n).toBe(before + 1);
  });

  it('keeps serving the old token when a background refresh fails, and retries only after refreshRetryMs', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now, refreshRetryMs: 60_000 });
    const t0 = clock.now() / 1000;
    let calls = 0;
    const fetcher = async (): Promise<readonly Token[]> => {
      calls++;
      if (calls === 1) return [token('old', t0 + 3600)];
      throw new TokenError('unavailable', 'IMDS down');
    };
    await cache.get('k', 'r', fetcher);
    clock.advance(45 * 60_000);
    expect((await cache.get('k', 'r', fetcher))[0]?.accessToken).toBe('tok-old');
    await flush();
    expect(calls).toBe(2);
    expect(cache.stats().refreshFailures).toBe(1);
    expect((await cache.get('k', 'r', fetcher))[0]?.accessToken).toBe('tok-old');
    expect(calls).toBe(2);
    clock.advance(61_000);
    await cache.get('k', 'r', fetcher);
    await flush();
    expect(calls).toBe(3);
  });

  it('never serves an expired token (nor one inside the expiry skew)', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now, expirySkewMs: 30_000 });
    const t0 = clock.now() / 1000;
    let n = 0;
    const fetcher = async () => [token(`v${++n}`, n === 1 ? t0 + 600 : clock.now() / 1000 + 3600)];
    await cache.get('k', 'r', fetcher);
    clock.advance(600_000 - 30_000); // exactly at expiry minus skew
    const got = await cache.get('k', 'r', fetcher);
    expect(got[0]?.accessToken).toBe('tok-v2');
    expect(n).toBe(2);
  });

  it('does not store a token that upstream handed out already expired', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now });
    let n = 0;
    const fetcher = async () => [token(`v${++n}`, clock.now() / 1000 - 1)];
    expect((await cache.get('k', 'r', fetcher))[0]?.accessToken).toBe('tok-v1');
    expect((await cache.get('k', 'r', fetcher))[0]?.accessToken).toBe('tok-v2');
    expect(cache.size).toBe(0);
  });

  it('multi-token entries expire with their earliest token', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now, expirySkewMs: 0, refreshFraction: 1, refreshBeforeExpiryMs: 0 });
    const t0 = clock.now() / 1000;
    let n = 0;
    const fetcher = async () => {
      n++;
      return [token('primary', t0 + 3600), token('aux', t0 + 60)];
    };
    await cache.get('k', 'r', fetcher);
    clock.advance(61_000);
    await cache.get('k', 'r', fetcher);
    expect(n).toBe(2);
  });

  it('is bounded: the least recently used entry is evicted', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now, maxEntries: 3 });
    const exp = clock.now() / 1000 + 3600;
    const calls: string[] = [];
    const f = (k: string) => async () => {
      calls.push(k);
      return [token(k, exp)];
    };
    await cache.get('a', 'r', f('a'));
    await cache.get('b', 'r', f('b'));
    await cache.get('c', 'r', f('c'));
    await cache.get('a', 'r', f('a')); // a is now most recent; b is the LRU
    await cache.get('d', 'r', f('d'));
    expect(cache.size).toBe(3);
    expect(cache.stats().evictions).toBe(1);
    await cache.get('a', 'r', f('a'));
    await cache.get('c', 'r', f('c'));
    expect(calls).toEqual(['a', 'b', 'c', 'd']);
    await cache.get('b', 'r', f('b'));
    expect(calls).toEqual(['a', 'b', 'c', 'd', 'b']);
  });

  it('maxEntries 0 (--token-cache-size=0) caches nothing: every request goes upstream, failures are not remembered, prefetch fetches nothing', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now, maxEntries: 0 });
    const exp = clock.now() / 1000 + 3600;
    let calls = 0;
    const f = async () => {
      calls++;
      return [token(`t${calls}`, exp)];
    };
    expect((await cache.get('a', 'r', f))[0]!.accessToken).toBe('tok-t1');
    expect((await cache.get('a', 'r', f))[0]!.accessToken).toBe('tok-t2');
    expect(cache.peek('a', 'r', f)).toBeUndefined();
    await cache.prefetch('a', 'r', f);
    expect(calls).toBe(2);
    expect(cache.size).toBe(0);
    let failures = 0;
    const failing = async () => {
      failures++;
      throw new TokenError('upstream', 'IMDS said no', { status: 400 });
    };
    await expect(cache.get('b', 'r', failing)).rejects.toThrow('IMDS said no');
    await expect(cache.get('b', 'r', failing)).rejects.toThrow('IMDS said no');
    expect(failures).toBe(2);
    expect(cache.stats()).toMatchObject({ hits: 0, negativeHits: 0, entries: 0, evictions: 0 });
  });

  it('remembers an upstream failure for negativeTtlMs, sharing it with all waiters; then asks again', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now, negativeTtlMs: 2_000 });
    let calls = 0;
    const fetcher = async (): Promise<readonly Token[]> => {
      calls++;
      throw new TokenError('upstream', 'IMDS answered 400: Identity not found', { status: 400 });
    };
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => cache.get('k', 'r', fetcher)));
    for (const r of results) {
      expect(r.status).toBe('rejected');
      if (r.status === 'rejected') expect((r.reason as TokenError).status).toBe(400);
    }
    expect(calls).toBe(1);
    await expect(cache.get('k', 'r', fetcher)).rejects.toMatchObject({ kind: 'upstream' });
    expect(calls).toBe(1);
    expect(cache.stats().negativeHits).toBe(1);
    clock.advance(2_001);
    await expect(cache.get('k', 'r', fetcher)).rejects.toMatchObject({ kind: 'upstream' });
    expect(calls).toBe(2);
  });

  it('does not remember transport failures', async () => {
    const cache = new TokenCache({ now: manualClock().now, negativeTtlMs: 60_000 });
    let calls = 0;
    const fetcher = async (): Promise<readonly Token[]> => {
      calls++;
      throw new TokenError('unavailable', 'connect ECONNREFUSED');
    };
    await expect(cache.get('k', 'r', fetcher)).rejects.toMatchObject({ kind: 'unavailable' });
    await expect(cache.get('k', 'r', fetcher)).rejects.toMatchObject({ kind: 'unavailable' });
    expect(calls).toBe(2);
  });

  it('invalidate() drops tokens and negative entries of that identity only', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now });
    const exp = clock.now() / 1000 + 3600;
    let n = 0;
    const ok = (k: string) => async () => [token(`${k}${++n}`, exp)];
    await cache.get('a', 'r1', ok('a'));
    await cache.get('a', 'r2', ok('a'));
    await cache.get('b', 'r1', ok('b'));
    await expect(
      cache.get('a', 'r3', async () => {
        throw new TokenError('upstream', 'denied', { status: 403 });
      }),
    ).rejects.toBeInstanceOf(TokenError);
    expect(cache.invalidate('a')).toBe(2);
    expect((await cache.get('b', 'r1', ok('b')))[0]?.accessToken).toBe('tok-b3');
    expect((await cache.get('a', 'r1', ok('a')))[0]?.accessToken).toBe('tok-a4');
    expect((await cache.get('a', 'r3', ok('a')))[0]?.accessToken).toBe('tok-a5');
  });

  it('an invalidation during a fetch wins: the late result reaches its waiters but is not stored', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now });
    const exp = clock.now() / 1000 + 3600;
    const gate = deferred<readonly Token[]>();
    const pending = cache.get('a', 'r', () => gate.promise);
    await flush();
    cache.invalidate('a');
    gate.resolve([token('stale', exp)]);
    expect((await pending)[0]?.accessToken).toBe('tok-stale');
    const fresh = await cache.get('a', 'r', async () => [token('fresh', exp)]);
    expect(fresh[0]?.accessToken).toBe('tok-fresh');
  });

  it('prefetch() fills the cache so the first request is a hit, and never rejects', async () => {
    const clock = manualClock();
    const cache = new TokenCache({ now: clock.now });
    const exp = clock.now() / 1000 + 3600;
    let calls = 0;
    await cache.prefetch('a', 'r', async () => {
      calls++;
      return [token('pre', exp)];
    });
    const got = await cache.get('a', 'r', async () => {
      calls++;
      return [token('late', exp)];
    });
    expect(got[0]?.accessToken).toBe('tok-pre');
    expect(calls).toBe(1);
    expect(cache.stats().hits).toBe(1);
    await expect(
      cache.prefetch('b', 'r', async () => {
        throw new TokenError('unavailable', 'down');
      }),
    ).resolves.toBeUndefined();
  });
});

describe('refreshPoint', () => {
  it('is the earlier of the lifetime fraction and the margin before expiry', () => {
    const h = 3_600_000;
    expect(refreshPoint(0, 24 * h, 0.5, 5 * 60_000)).toBe(12 * h);
    expect(refreshPoint(0, h, 0.95, 5 * 60_000)).toBe(h - 5 * 60_000);
    expect(refreshPoint(0, h, 0.5, 5 * 60_000)).toBe(h / 2);
  });
  it('falls back to the fraction for tokens shorter-lived than the margin', () => {
    expect(refreshPoint(0, 120_000, 0.5, 300_000)).toBe(60_000);
  });
});
