// The token cache shares the node's upstream budget between pods: a per-pod bucket on the fetches a pod starts,
// and a bound on upstream calls at once (issue 10 row 11).
import { describe, expect, it } from 'vitest';
import { TokenCache } from '../../src/nmi/tokens/cache.js';
import { PerCallerMissLimit } from '../../src/nmi/tokens/miss-limit.js';
import { TokenError, type Token } from '../../src/nmi/tokens/types.js';

const T0 = 1_700_000_000_000;

function token(tag: string): Token {
  return { accessToken: `tok-${tag}`, expiresOn: T0 / 1000 + 3600, resource: 'r', tokenType: 'Bearer' };
}

const flush = () => new Promise<void>((r) => setImmediate(r));

describe('PerCallerMissLimit', () => {
  it('lets a caller start its burst at once, then one per 1/rate seconds, and says how long to wait', () => {
    const limit = new PerCallerMissLimit({ ratePerSecond: 10, burst: 3 });
    expect([0, 0, 0].map(() => limit.take('pod-a', T0))).toEqual([0, 0, 0]);
    expect(limit.take('pod-a', T0)).toBe(100);
    // Another pod has its own bucket.
    expect(limit.take('pod-b', T0)).toBe(0);
    expect(limit.take('pod-a', T0 + 100)).toBe(0);
    expect(limit.take('pod-a', T0 + 150)).toBe(50);
  });

  it('forgets callers whose bucket refilled, and stays bounded in callers', () => {
    const limit = new PerCallerMissLimit({ ratePerSecond: 1, burst: 2, maxCallers: 3 });
    limit.take('a', T0);
    limit.take('b', T0);
    limit.sweep(T0 + 500);
    expect(limit.size).toBe(2);
    limit.sweep(T0 + 1_000);
    expect(limit.size).toBe(0);
    for (const c of ['a', 'b', 'c', 'd', 'e']) limit.take(c, T0);
    expect(limit.size).toBeLessThanOrEqual(3);
  });
});

describe('TokenCache fairness', () => {
  it('charges a caller only for the fetches it starts: 400 distinct resources from one pod start its burst, not 400 calls', async () => {
    const cache = new TokenCache({ now: () => T0, missLimit: { ratePerSecond: 10, burst: 20 } });
    let calls = 0;
    const results = await Promise.allSettled(
      Array.from({ length: 400 }, (_, i) =>
        cache.get('ns/a@u#1', `https://r${i}.example`, async () => {
          calls++;
          return [token(String(i))];
        }, 'pod-a'),
      ),
    );
    expect(calls).toBe(20);
    const refused = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as TokenError);
    expect(refused).toHaveLength(380);
    expect(refused.every((e) => e instanceof TokenError && e.kind === 'throttled' && (e.retryAfterMs ?? 0) > 0)).toBe(true);
    expect(cache.stats().throttled).toBe(380);
    // Another pod is not affected, and joining a fetch under way or a hit costs nothing.
    expect(await cache.get('ns/b@u#1', 'https://r0.example', async () => [token('b')], 'pod-b')).toEqual([token('b')]);
    expect(await cache.get('ns/a@u#1', 'https://r0.example', async () => [token('x')], 'pod-a')).toEqual([token('0')]);
  });

  it('runs at most maxConcurrentFetches upstream calls at once and the rest in arrival order', async () => {
    const cache = new TokenCache({ now: () => T0, maxConcurrentFetches: 4 });
    let running = 0;
    let peak = 0;
    const order: number[] = [];
    const gates: Array<() => void> = [];
    const all = Array.from({ length: 12 }, (_, i) =>
      cache.get('ns/a@u#1', `r${i}`, async () => {
        order.push(i);
        running++;
        peak = Math.max(peak, running);
        await new Promise<void>((r) => gates.push(r));
        running--;
        return [token(String(i))];
      }),
    );
    await flush();
    expect(running).toBe(4);
    expect(cache.stats().queuedFetches).toBe(8);
    while (gates.length > 0 || running > 0) {
      gates.shift()?.();
      await flush();
    }
    await Promise.all(all);
    expect(peak).toBe(4);
    expect(order).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(cache.stats().queuedFetches).toBe(0);
  });

  it('frees the slot of a fetch that fails', async () => {
    const cache = new TokenCache({ now: () => T0, maxConcurrentFetches: 1 });
    await expect(cache.get('k', 'r1', async () => Promise.reject(new TokenError('unavailable', 'down')))).rejects.toThrow('down');
    await expect(cache.get('k', 'r2', () => { throw new TokenError('invalid', 'sync'); })).rejects.toThrow('sync');
    expect(await cache.get('k', 'r3', async () => [token('ok')])).toEqual([token('ok')]);
  });
});
