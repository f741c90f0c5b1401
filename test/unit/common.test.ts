import { describe, expect, it } from 'vitest';
import { Backoff, backoffDelay, retryWithBackoff } from '../../src/common/backoff.js';
import { abortableSleep, ManualClock } from '../../src/common/clock.js';
import { abortReason, errorMessage, isAbortError, wrapError } from '../../src/common/errors.js';
import { child, createLogger } from '../../src/common/log.js';

describe('backoffDelay', () => {
  const opts = { initialMs: 100, maxMs: 1000, jitter: 0 };

  it('doubles per attempt up to the cap', () => {
    expect([0, 1, 2, 3, 4, 5].map((a) => backoffDelay(a, opts))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(backoffDelay(2, { ...opts, factor: 3 })).toBe(900);
  });

  it('takes off at most the jitter fraction and never exceeds the cap', () => {
    const withJitter = { initialMs: 100, maxMs: 1000, jitter: 0.5 };
    expect(backoffDelay(3, { ...withJitter, random: () => 0 })).toBe(800);
    expect(backoffDelay(3, { ...withJitter, random: () => 0.999999 })).toBe(400);
    expect(backoffDelay(10, { ...withJitter, random: () => 0 })).toBe(1000);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(i % 8, { initialMs: 100, maxMs: 1000, jitter: 0.2 });
      const base = Math.min(1000, 100 * 2 ** (i % 8));
      expect(d).toBeGreaterThanOrEqual(Math.floor(base * 0.8));
      expect(d).toBeLessThanOrEqual(base);
    }
  });

  it('handles huge attempt numbers without overflowing', () => {
    expect(backoffDelay(10_000, opts)).toBe(1000);
  });
});

describe('Backoff', () => {
  it('grows with next() and starts over after reset()', () => {
    const b = new Backoff({ initialMs: 10, maxMs: 100, jitter: 0 });
    expect([b.next(), b.next(), b.next()]).toEqual([10, 20, 40]);
    expect(b.attempt).toBe(3);
    b.reset();
    expect(b.next()).toBe(10);
  });
});

describe('retryWithBackoff', () => {
  it('retries until success, sleeping the computed delays on the given clock', async () => {
    const clock = new ManualClock();
    const delays: number[] = [];
    let calls = 0;
    const done = retryWithBackoff(
      async () => {
        calls++;
        if (calls < 3) throw new Error(`fail ${calls}`);
        return 'ok';
      },
      { initialMs: 100, maxMs: 1000, jitter: 0, clock, onRetry: ({ delayMs }) => delays.push(delayMs) },
    );
    await clock.advance(0);
    expect(calls).toBe(1);
    await clock.advance(100);
    expect(calls).toBe(2);
    await clock.advance(200);
    await expect(done).resolves.toBe('ok');
    expect(delays).toEqual([100, 200]);
  });

  it('stops on a non-retryable error and gives up after maxAttempts with the cause', async () => {
    const clock = new ManualClock();
    const fatal = new Error('fatal');
    await expect(
      retryWithBackoff(() => Promise.reject(fatal), { initialMs: 1, maxMs: 1, clock, retryable: () => false }),
    ).rejects.toBe(fatal);

    let calls = 0;
    const last = new Error('still down');
    const p = retryWithBackoff(
      () => {
        calls++;
        return Promise.reject(last);
      },
      { initialMs: 10, maxMs: 10, jitter: 0, clock, maxAttempts: 2 },
    );
    const settled = p.catch((e: unknown) => e);
    await clock.advance(10);
    const err = await settled;
    expect(calls).toBe(2);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toBe('gave up after 2 attempts: still down');
    expect((err as Error).cause).toBe(last);
  });

  it('waits the server hint when it is longer than the backoff', async () => {
    const clock = new ManualClock();
    let calls = 0;
    const p = retryWithBackoff(
      async () => {
        if (calls++ === 0) throw new Error('429');
        return calls;
      },
      { initialMs: 10, maxMs: 10, jitter: 0, clock, delayHint: () => 5000 },
    );
    await clock.advance(4999);
    expect(calls).toBe(1);
    await clock.advance(1);
    await expect(p).resolves.toBe(2);
  });

  it('rejects promptly when aborted while waiting', async () => {
    const clock = new ManualClock();
    const ac = new AbortController();
    const p = retryWithBackoff(() => Promise.reject(new Error('x')), { initialMs: 1000, maxMs: 1000, clock, signal: ac.signal });
    const settled = p.catch((e: unknown) => e);
    await clock.advance(0);
    ac.abort();
    expect(isAbortError(await settled)).toBe(true);
    expect(clock.pendingSleeps()).toBe(0);
  });
});

describe('clocks', () => {
  it('ManualClock steps through deadlines, so a woken task can sleep again within one advance', async () => {
    const clock = new ManualClock();
    const seen: number[] = [];
    void (async () => {
      for (let i = 0; i < 3; i++) {
        await clock.sleep(100);
        seen.push(clock.now());
      }
    })();
    await clock.advance(250);
    expect(seen).toEqual([100, 200]);
    expect(clock.now()).toBe(250);
    await clock.advance(50);
    expect(seen).toEqual([100, 200, 300]);
  });

  it('ManualClock wakes sleeps in deadline order only when advanced far enough', async () => {
    const clock = new ManualClock(1000);
    const woke: string[] = [];
    void clock.sleep(50).then(() => woke.push('b'));
    void clock.sleep(20).then(() => woke.push('a'));
    void clock.sleep(500).then(() => woke.push('c'));
    await clock.advance(49);
    expect(woke).toEqual(['a']);
    await clock.advance(1);
    expect(woke).toEqual(['a', 'b']);
    expect(clock.now()).toBe(1050);
    expect(clock.pendingSleeps()).toBe(1);
  });

  it('abortableSleep rejects with the abort reason and clears its timer', async () => {
    const ac = new AbortController();
    const p = abortableSleep(60_000, ac.signal);
    ac.abort(new Error('stopping'));
    await expect(p).rejects.toThrow('stopping');
    await expect(abortableSleep(10, AbortSignal.abort())).rejects.toSatisfy(isAbortError);
    await expect(abortableSleep(1)).resolves.toBeUndefined();
  });
});

describe('errors', () => {
  it('gets a message out of anything', () => {
    expect(errorMessage(new Error('boom'))).toBe('boom');
    expect(errorMessage('text')).toBe('text');
    expect(errorMessage({ code: 1 })).toBe('{"code":1}');
    expect(errorMessage(undefined)).toBe('undefined');
    const cyclic: { self?: unknown } = {};
    cyclic.self = cyclic;
    expect(errorMessage(cyclic)).toBe('[object Object]');
  });

  it('wraps with context and keeps the cause', () => {
    const cause = new Error('ECONNRESET');
    const wrapped = wrapError('listing pods', cause);
    expect(wrapped.message).toBe('listing pods: ECONNRESET');
    expect(wrapped.cause).toBe(cause);
  });

  it('turns an abort reason into an error', () => {
    const ac = new AbortController();
    ac.abort();
    expect(isAbortError(abortReason(ac.signal))).toBe(true);
    const own = new Error('mine');
    const ac2 = new AbortController();
    ac2.abort(own);
    expect(abortReason(ac2.signal)).toBe(own);
  });
});

describe('createLogger', () => {
  function sink(): { lines: string[]; write: (s: string) => void } {
    const lines: string[] = [];
    return { lines, write: (s: string) => void lines.push(s) };
  }

  it('writes one JSON event per line with the component and never a secret', () => {
    const out = sink();
    const log = child(createLogger({ destination: out, base: { app: 'nmi' } }), 'tokens', { node: 'n1' });
    log.info(
      {
        token: 'eyJ.secret',
        accessToken: 'at',
        clientSecret: 'cs',
        password: 'pw',
        clientID: '00000000-1111-2222-3333-444455556666',
        req: { headers: { authorization: 'Bearer abc' } },
        nested: { access_token: 'x', client_secret: 'y' },
        pod: 'p',
      },
      'token served',
    );
    expect(out.lines).toHaveLength(1);
    const line = out.lines[0] ?? '';
    for (const secret of ['eyJ.secret', '"at"', '"cs"', '"pw"', 'Bearer abc', '"x"', '"y"', '1111-2222']) {
      expect(line).not.toContain(secret);
    }
    expect(JSON.parse(line)).toMatchObject({
      level: 'info',
      app: 'nmi',
      component: 'tokens',
      node: 'n1',
      pod: 'p',
      msg: 'token served',
      clientID: '0000##### REDACTED #####6666',
    });
  });

  it('honours the level and the text format', () => {
    const out = sink();
    const log = createLogger({ destination: out, level: 'warn', format: 'text' });
    log.info('hidden');
    child(log, 'mic').warn({ pod: 'p', token: 't' }, 'shown');
    expect(out.lines).toHaveLength(1);
    expect(out.lines[0]).toMatch(/^\S+ WARN \[mic\] shown pod=p token=\[REDACTED\]\n$/);
  });
});
