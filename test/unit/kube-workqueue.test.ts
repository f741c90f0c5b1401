import { afterEach, describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../../src/common/clock.js';
import { WorkQueue } from '../../src/kube/workqueue.js';

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const flush = async (): Promise<void> => {
  for (let i = 0; i < 10; i++) await Promise.resolve();
};

describe('WorkQueue', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('processes a key added many times while waiting only once', async () => {
    const seen: string[] = [];
    const q = new WorkQueue({ process: async (k) => void seen.push(k) });
    q.add('a');
    q.add('a');
    q.add('b');
    q.add('a');
    expect(q.length).toBe(2);
    q.start();
    await q.idle();
    expect(seen).toEqual(['a', 'b']);
    await q.shutDown();
  });

  it('never hands one key to two workers at once, and reprocesses a key re-added during processing', async () => {
    const gates: Array<ReturnType<typeof deferred>> = [];
    let active = 0;
    let maxActive = 0;
    let calls = 0;
    const q = new WorkQueue({
      workers: 4,
      process: async () => {
        calls++;
        active++;
        maxActive = Math.max(maxActive, active);
        const gate = deferred();
        gates.push(gate);
        await gate.promise;
        active--;
      },
    });
    q.start();
    q.add('k');
    await flush();
    expect(calls).toBe(1);
    // re-added twice while processing: deduplicated into one more run, after the first finishes
    q.add('k');
    q.add('k');
    await flush();
    expect(calls).toBe(1);
    gates[0].resolve();
    await flush();
    expect(calls).toBe(2);
    gates[1].resolve();
    await q.idle();
    expect(calls).toBe(2);
    expect(maxActive).toBe(1);
    await q.shutDown();
  });

  it('runs different keys in parallel up to the number of workers', async () => {
    const gate = deferred();
    let active = 0;
    let maxActive = 0;
    const q = new WorkQueue({
      workers: 2,
      process: async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        await gate.promise;
        active--;
      },
    });
    q.start();
    for (const k of ['a', 'b', 'c']) q.add(k);
    await flush();
    expect(active).toBe(2);
    gate.resolve();
    await q.idle();
    expect(maxActive).toBe(2);
    await q.shutDown();
  });

  it('retries a failing key with per-key exponential backoff and forgets it after success', async () => {
    vi.useFakeTimers();
    const times: number[] = [];
    let failuresLeft = 3;
    const q = new WorkQueue({
      baseDelayMs: 100,
      maxDelayMs: 10_000,
      process: async () => {
        times.push(Date.now());
        if (failuresLeft-- > 0) throw new Error('boom');
      },
    });
    const t0 = Date.now();
    q.start();
    q.add('k');
    await vi.advanceTimersByTimeAsync(0);
    expect(times.length).toBe(1);
    expect(q.numRequeues('k')).toBe(1);
    await vi.advanceTimersByTimeAsync(99);
    expect(times.length).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(times.length).toBe(2);
    await vi.advanceTimersByTimeAsync(200);
    expect(times.length).toBe(3);
    await vi.advanceTimersByTimeAsync(399);
    expect(times.length).toBe(3);
    await vi.advanceTimersByTimeAsync(1);
    expect(times.length).toBe(4);
    expect(times.map((t) => t - t0)).toEqual([0, 100, 300, 700]);
    expect(q.numRequeues('k')).toBe(0);
    await q.shutDown();
  });

  it('caps the backoff at maxDelayMs', async () => {
    vi.useFakeTimers();
    const times: number[] = [];
    const q = new WorkQueue({
      baseDelayMs: 100,
      maxDelayMs: 250,
      process: async () => {
        times.push(Date.now());
        if (times.length < 5) throw new Error('boom');
      },
    });
    q.start();
    q.add('k');
    await vi.advanceTimersByTimeAsync(2000);
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    expect(gaps).toEqual([100, 200, 250, 250]);
    await q.shutDown();
  });

  it('keeps the earliest time when a key is scheduled twice with addAfter', async () => {
    vi.useFakeTimers();
    const seen: number[] = [];
    const q = new WorkQueue({ process: async () => void seen.push(Date.now()) });
    const t0 = Date.now();
    q.start();
    q.addAfter('k', 500);
    q.addAfter('k', 200);
    q.addAfter('k', 800);
    await vi.advanceTimersByTimeAsync(1000);
    expect(seen.map((t) => t - t0)).toEqual([200]);
    await q.shutDown();
  });

  it('takes delayed adds from its injected clock, and shutDown leaves no sleep behind', async () => {
    const clock = new ManualClock(10_000);
    const seen: number[] = [];
    const q = new WorkQueue({ clock, process: async () => void seen.push(clock.now()) });
    q.start();
    q.addAfter('k', 500);
    q.addAfter('k', 200);
    expect(clock.pendingSleeps()).toBe(1); // the 500 ms one was cancelled
    await clock.advance(199);
    expect(seen).toEqual([]);
    await clock.advance(1);
    expect(seen).toEqual([10_200]);
    q.addAfter('later', 1_000);
    await q.shutDown();
    expect(clock.pendingSleeps()).toBe(0);
  });

  it('requeues after the delay a handler asks for', async () => {
    vi.useFakeTimers();
    let calls = 0;
    const q = new WorkQueue({ process: async () => (++calls < 3 ? { requeueAfterMs: 1000 } : undefined) });
    q.start();
    q.add('sync');
    await vi.advanceTimersByTimeAsync(5000);
    expect(calls).toBe(3);
    expect(q.numRequeues('sync')).toBe(0);
    await q.shutDown();
  });

  it('stops retrying after maxRetries consecutive failures', async () => {
    vi.useFakeTimers();
    let calls = 0;
    const q = new WorkQueue({
      baseDelayMs: 10,
      maxRetries: 2,
      process: async () => {
        calls++;
        throw new Error('always');
      },
    });
    q.start();
    q.add('k');
    await vi.advanceTimersByTimeAsync(10_000);
    expect(calls).toBe(3);
    await q.shutDown();
  });

  it('drains queued keys on shutDown, then refuses new ones and cancels delayed adds', async () => {
    vi.useFakeTimers();
    const seen: string[] = [];
    const gate = deferred();
    const q = new WorkQueue({
      process: async (k) => {
        seen.push(k);
        if (k === 'a') await gate.promise;
      },
    });
    q.start();
    q.add('a');
    q.add('b');
    q.addAfter('later', 1000);
    await vi.advanceTimersByTimeAsync(0);
    const stopped = q.shutDown();
    q.add('c');
    gate.resolve();
    await stopped;
    await vi.advanceTimersByTimeAsync(5000);
    expect(seen).toEqual(['a', 'b']);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('drops queued keys on shutDown without drain but lets the running one finish', async () => {
    const seen: string[] = [];
    const gate = deferred();
    const q = new WorkQueue({
      process: async (k) => {
        seen.push(k);
        await gate.promise;
      },
    });
    q.start();
    q.add('a');
    q.add('b');
    await flush();
    const stopped = q.shutDown({ drain: false });
    gate.resolve();
    await stopped;
    expect(seen).toEqual(['a']);
  });
});
