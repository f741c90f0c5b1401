import { afterEach, describe, expect, it, vi } from 'vitest';
import { RateLimiter } from '../../src/kube/ratelimit.js';
import { Backoff } from '../../src/common/backoff.js';
import { sleep } from '../../src/common/clock.js';

describe('RateLimiter', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('lets a burst through at once, then refills at qps', () => {
    let now = 0;
    const rl = new RateLimiter({ qps: 2, burst: 3, now: () => now });
    expect([rl.tryAcquire(), rl.tryAcquire(), rl.tryAcquire()]).toEqual([true, true, true]);
    expect(rl.tryAcquire()).toBe(false);
    expect(rl.reserveDelayMs()).toBe(500);
    now = 499;
    expect(rl.tryAcquire()).toBe(false);
    now = 500;
    expect(rl.tryAcquire()).toBe(true);
    // a long idle period refills no more than the burst
    now = 60_000;
    let granted = 0;
    while (rl.tryAcquire()) granted++;
    expect(granted).toBe(3);
  });

  it('spaces waiting callers 1/qps apart in arrival order', async () => {
    vi.useFakeTimers();
    const rl = new RateLimiter({ qps: 10, burst: 1 });
    const done: Array<[number, number]> = [];
    const t0 = Date.now();
    const all = [0, 1, 2, 3].map((i) => rl.acquire().then(() => done.push([i, Date.now() - t0])));
    await vi.advanceTimersByTimeAsync(1000);
    await Promise.all(all);
    expect(done).toEqual([[0, 0], [1, 100], [2, 200], [3, 300]]);
  });

  it('gives the token back when a waiter is aborted', async () => {
    vi.useFakeTimers();
    const rl = new RateLimiter({ qps: 1, burst: 1 });
    await rl.acquire();
    const ac = new AbortController();
    const waiting = rl.acquire(ac.signal);
    ac.abort();
    await expect(waiting).rejects.toBeDefined();
    await vi.advanceTimersByTimeAsync(1000);
    expect(rl.tryAcquire()).toBe(true);
  });

  it('does not limit when qps is 0', async () => {
    const rl = new RateLimiter({ qps: 0, burst: 1 });
    for (let i = 0; i < 100; i++) expect(rl.tryAcquire()).toBe(true);
    const wrapped = rl.wrap(async (x: number) => x * 2);
    expect(await wrapped(21)).toBe(42);
  });
});

describe('Backoff', () => {
  it('doubles from the initial delay up to the ceiling, with bounded jitter, and resets', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0 });
    expect([b.next(), b.next(), b.next(), b.next(), b.next()]).toEqual([100, 200, 400, 800, 1000]);
    b.reset();
    expect(b.next()).toBe(100);
    const j = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0.5, random: () => 1 });
    // The one Backoff (src/common/backoff.ts) takes jitter off the delay, so it never exceeds the ceiling.
    expect(j.next()).toBe(50);
  });

  it('sleep resolves false at once when aborted and leaves no timer', async () => {
    vi.useFakeTimers();
    const ac = new AbortController();
    const p = sleep(10_000, ac.signal);
    ac.abort();
    expect(await p).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
    vi.useRealTimers();
  });
});
