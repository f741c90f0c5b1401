import { describe, expect, it } from 'vitest';
import { parseRetryAfter, parseRetryAfterMs, retryAfterFromHeaders } from '../../src/common/retry-after.js';
import { errorText, isNetworkError } from '../../src/common/errors.js';
import { ManualClock, sleep } from '../../src/common/clock.js';

const now = Date.UTC(2024, 0, 1, 0, 0, 0); // Mon, 01 Jan 2024 00:00:00 GMT

describe('parseRetryAfter (RFC 9110 §10.2.3)', () => {
  it('reads delta-seconds as milliseconds', () => {
    expect(parseRetryAfter('0', now)).toBe(0);
    expect(parseRetryAfter('7', now)).toBe(7000);
    expect(parseRetryAfter(' 120 ', now)).toBe(120_000);
  });

  it('caps an absurd delta at 2^31 seconds instead of overflowing', () => {
    expect(parseRetryAfter('9'.repeat(400), now)).toBe(2_147_483_648_000);
  });

  it('reads the three HTTP-date forms as the time left until then', () => {
    expect(parseRetryAfter('Mon, 01 Jan 2024 00:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Monday, 01-Jan-24 00:01:00 GMT', now)).toBe(60_000);
    expect(parseRetryAfter('Mon Jan  1 00:00:05 2024', now)).toBe(5_000);
    expect(parseRetryAfter(new Date(now + 90_000).toUTCString(), now)).toBe(90_000);
  });

  it('turns a date in the past into 0', () => {
    expect(parseRetryAfter('Sun, 31 Dec 2023 23:59:00 GMT', now)).toBe(0);
  });

  it('reads an RFC 850 two-digit year more than 50 years ahead as the past century', () => {
    // 2090 is more than 50 years after 2024, so '90' is 1990: long past.
    expect(parseRetryAfter('Sunday, 01-Jan-90 00:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('Friday, 01-Jan-60 00:00:00 GMT', now)).toBeGreaterThan(0);
  });

  it('rejects what is neither delta-seconds nor an HTTP-date', () => {
    for (const bad of [undefined, null, '', '   ', 'soon', '-3', '1.5', '+4', '1e3',
      'Mon, 01 Jan 2024 00:00:30', 'Mon, 01 Jan 2024 00:00:30 PST', '2024-01-01T00:00:30Z',
      'Mon, 31 Feb 2024 00:00:00 GMT', 'Mon, 01 Jan 2024 25:00:00 GMT', 'Mon, 01 Foo 2024 00:00:00 GMT']) {
      expect(parseRetryAfter(bad, now), String(bad)).toBeUndefined();
    }
  });
});

describe('retryAfterFromHeaders', () => {
  it('prefers Azure retry-after-ms, then x-ms-retry-after-ms, then Retry-After', () => {
    const h = (init: Record<string, string>) => new Headers(init);
    expect(retryAfterFromHeaders(h({ 'retry-after-ms': '250', 'x-ms-retry-after-ms': '500', 'retry-after': '9' }), now)).toBe(250);
    expect(retryAfterFromHeaders(h({ 'x-ms-retry-after-ms': '500', 'retry-after': '9' }), now)).toBe(500);
    expect(retryAfterFromHeaders(h({ 'retry-after': '9' }), now)).toBe(9000);
    expect(retryAfterFromHeaders(h({}), now)).toBeUndefined();
  });

  it('skips a malformed header in favour of the next one', () => {
    expect(retryAfterFromHeaders(new Headers({ 'retry-after-ms': 'soon', 'retry-after': '2' }), now)).toBe(2000);
  });

  it('reads plain records case-insensitively, as client-node hands them over', () => {
    expect(retryAfterFromHeaders({ 'Retry-After': '3' }, now)).toBe(3000);
    expect(retryAfterFromHeaders({ 'X-MS-Retry-After-Ms': '1500.2' }, now)).toBe(1501);
    expect(retryAfterFromHeaders({ 'retry-after': ['4', '5'] }, now)).toBe(4000);
    expect(retryAfterFromHeaders(undefined, now)).toBeUndefined();
  });

  it('parseRetryAfterMs takes non-negative milliseconds only', () => {
    expect(parseRetryAfterMs('0')).toBe(0);
    expect(parseRetryAfterMs('-1')).toBeUndefined();
    expect(parseRetryAfterMs('1s')).toBeUndefined();
  });
});

describe('error classification shared by kube and ARM', () => {
  const sys = (code: string) => Object.assign(new Error(`connect ${code}`), { code });

  it('finds a socket failure anywhere in the cause chain', () => {
    expect(isNetworkError(sys('ECONNRESET'))).toBe(true);
    expect(isNetworkError(new TypeError('fetch failed', { cause: sys('ECONNREFUSED') }))).toBe(true);
    expect(isNetworkError(new Error('outer', { cause: new Error('mid', { cause: sys('EAI_AGAIN') }) }))).toBe(true);
    expect(isNetworkError(Object.assign(new Error('send'), { code: 'REQUEST_SEND_ERROR' }))).toBe(true);
    expect(isNetworkError(new DOMException('timed out', 'TimeoutError'))).toBe(true);
  });

  it('does not take a refusal, an abort or a bug for a network failure', () => {
    expect(isNetworkError(Object.assign(new Error('denied'), { code: 'AuthorizationFailed' }))).toBe(false);
    expect(isNetworkError(new DOMException('aborted', 'AbortError'))).toBe(false);
    expect(isNetworkError(new TypeError('x is not a function'))).toBe(false);
    expect(isNetworkError('ECONNRESET')).toBe(false);
  });

  it('errorText appends the first line of the cause', () => {
    expect(errorText(new TypeError('fetch failed', { cause: new Error('connect ECONNREFUSED 127.0.0.1:1\nstack') }))).toBe(
      'fetch failed (connect ECONNREFUSED 127.0.0.1:1)',
    );
    expect(errorText(new Error('plain'))).toBe('plain');
    expect(errorText('text')).toBe('text');
  });
});

describe('sleep', () => {
  it('resolves true on the injected clock once the time has passed, false when aborted', async () => {
    const clock = new ManualClock(0);
    const done = sleep(1000, undefined, clock);
    await clock.advance(1000);
    expect(await done).toBe(true);
    const ac = new AbortController();
    const stopped = sleep(1000, ac.signal, clock);
    ac.abort(new Error('stop'));
    expect(await stopped).toBe(false);
    expect(clock.pendingSleeps()).toBe(0);
  });
});
