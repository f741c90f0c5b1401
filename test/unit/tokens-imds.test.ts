import { describe, expect, it } from 'vitest';
import {
  createImdsClient,
  imdsTokenUrl,
  isRetryableStatus,
  parseImdsTokenBody,
  parseRetryAfter,
} from '../../src/nmi/tokens/imds.js';
import { TokenError } from '../../src/nmi/tokens/types.js';

describe('parseImdsTokenBody', () => {
  it('reads the IMDS shape with numbers as strings', () => {
    const t = parseImdsTokenBody(
      JSON.stringify({
        access_token: 'eyJ.a.b',
        client_id: 'cid',
        expires_in: '86399',
        expires_on: '1795445807',
        ext_expires_in: '86399',
        not_before: '1795359107',
        resource: 'https://vault.azure.net/',
        token_type: 'Bearer',
      }),
      'https://vault.azure.net',
    );
    expect(t).toEqual({
      accessToken: 'eyJ.a.b',
      expiresOn: 1795445807,
      expiresIn: 86399,
      notBefore: 1795359107,
      resource: 'https://vault.azure.net/',
      tokenType: 'Bearer',
      clientId: 'cid',
    });
  });

  it('accepts numbers as JSON numbers and defaults resource and token type', () => {
    const t = parseImdsTokenBody('{"access_token":"x","expires_on":1795445807}', 'https://storage.azure.com');
    expect(t).toEqual({ accessToken: 'x', expiresOn: 1795445807, resource: 'https://storage.azure.com', tokenType: 'Bearer' });
  });

  it.each([
    ['not JSON', 'oops'],
    ['an array', '[]'],
    ['no access_token', '{"expires_on":"1795445807"}'],
    ['empty access_token', '{"access_token":"","expires_on":"1795445807"}'],
    ['no expires_on', '{"access_token":"x","expires_in":"3600"}'],
    ['expires_on not a number', '{"access_token":"x","expires_on":"soon"}'],
    ['negative expires_on', '{"access_token":"x","expires_on":-5}'],
    ['malformed not_before', '{"access_token":"x","expires_on":"1795445807","not_before":"yesterday"}'],
  ])('rejects a body with %s as an upstream error', (_what, body) => {
    try {
      parseImdsTokenBody(body, 'r');
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(TokenError);
      expect((e as TokenError).kind).toBe('upstream');
      expect((e as TokenError).status).toBe(200);
    }
  });
});

describe('imdsTokenUrl', () => {
  it('asks for a client id, a resource id, or the system identity', () => {
    const u1 = new URL(imdsTokenUrl('http://imds', 'https://vault.azure.net', { clientId: 'c-1' }));
    expect(u1.pathname).toBe('/metadata/identity/oauth2/token');
    expect(Object.fromEntries(u1.searchParams)).toEqual({
      'api-version': '2018-02-01',
      resource: 'https://vault.azure.net',
      client_id: 'c-1',
    });
    const u2 = new URL(imdsTokenUrl('http://imds', 'r', { resourceId: '/subscriptions/s/x' }));
    expect(u2.searchParams.get('msi_res_id')).toBe('/subscriptions/s/x');
    expect(u2.searchParams.has('client_id')).toBe(false);
    const u3 = new URL(imdsTokenUrl('http://imds', 'r', {}));
    expect([...u3.searchParams.keys()].sort()).toEqual(['api-version', 'resource']);
  });
});

describe('retry classification', () => {
  it('retries what the original retried', () => {
    for (const s of [404, 408, 410, 429, 500, 503, 599]) expect(isRetryableStatus(s)).toBe(true);
    for (const s of [400, 401, 403, 409]) expect(isRetryableStatus(s)).toBe(false);
  });
  it('parses Retry-After as seconds or a date', () => {
    expect(parseRetryAfter('3', 0)).toBe(3000);
    expect(parseRetryAfter(null, 0)).toBeUndefined();
    expect(parseRetryAfter('soon', 0)).toBeUndefined();
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4_000)).toBe(6000);
  });
});

/** A scripted fake IMDS as a fetch function: each call takes the next step. */
function scriptedFetch(steps: Array<{ status: number; body: string; headers?: Record<string, string> } | 'reset' | 'hang'>) {
  const calls: Array<{ url: string; headers: Headers }> = [];
  const fn = (async (input: string | URL | Request, init?: RequestInit) => {
    calls.push({ url: String(input), headers: new Headers(init?.headers) });
    const step = steps[Math.min(calls.length - 1, steps.length - 1)];
    if (step === 'reset') throw new TypeError('fetch failed', { cause: new Error('ECONNRESET') });
    if (step === 'hang' || step === undefined) {
      return new Promise<Response>((_, reject) => {
        init?.signal?.addEventListener('abort', () => reject(init.signal?.reason));
      });
    }
    return new Response(step.body, { status: step.status, headers: step.headers ?? {} });
  }) as typeof fetch;
  return { fn, calls };
}

const good = { status: 200, body: '{"access_token":"tok","expires_on":"1795445807","resource":"r"}' };

describe('createImdsClient', () => {
  const sleeps: number[] = [];
  const fastSleep = async (ms: number) => void sleeps.push(ms);

  it('sends Metadata: true and returns the parsed token', async () => {
    const f = scriptedFetch([good]);
    const c = createImdsClient({ endpoint: 'http://imds/', fetch: f.fn, sleep: fastSleep });
    const t = await c.getToken('r', { clientId: 'c' });
    expect(t.accessToken).toBe('tok');
    expect(f.calls).toHaveLength(1);
    expect(f.calls[0]?.headers.get('metadata')).toBe('true');
    expect(f.calls[0]?.url.startsWith('http://imds/metadata/identity/oauth2/token?')).toBe(true);
  });

  it('does not retry a 400 and reports it as upstream with status and body', async () => {
    const body = '{"error":"invalid_request","error_description":"Identity not found"}';
    const f = scriptedFetch([{ status: 400, body }]);
    const c = createImdsClient({ endpoint: 'http://imds', fetch: f.fn, sleep: fastSleep });
    const err = await c.getToken('r', { clientId: 'c' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenError);
    expect(err).toMatchObject({ kind: 'upstream', status: 400, body });
    expect((err as Error).message).toContain('Identity not found');
    expect(f.calls).toHaveLength(1);
  });

  it('retries 404/429/5xx and transport errors, honouring Retry-After, then succeeds', async () => {
    sleeps.length = 0;
    const f = scriptedFetch([
      { status: 404, body: 'not yet' },
      { status: 429, body: '', headers: { 'retry-after': '3' } },
      'reset',
      { status: 503, body: '' },
      good,
    ]);
    const c = createImdsClient({ endpoint: 'http://imds', fetch: f.fn, sleep: fastSleep, baseDelayMs: 100, maxAttempts: 5 });
    await expect(c.getToken('r', {})).resolves.toMatchObject({ accessToken: 'tok' });
    expect(f.calls).toHaveLength(5);
    expect(sleeps).toEqual([100, 3000, 400, 800]);
  });

  it('gives up after maxAttempts with the last answer: upstream for a status, unavailable for transport', async () => {
    const f1 = scriptedFetch([{ status: 500, body: 'boom' }]);
    const c1 = createImdsClient({ endpoint: 'http://imds', fetch: f1.fn, sleep: fastSleep, maxAttempts: 3 });
    await expect(c1.getToken('r', {})).rejects.toMatchObject({ kind: 'upstream', status: 500 });
    expect(f1.calls).toHaveLength(3);
    const f2 = scriptedFetch(['reset']);
    const c2 = createImdsClient({ endpoint: 'http://imds', fetch: f2.fn, sleep: fastSleep, maxAttempts: 2 });
    const err = await c2.getToken('r', {}).catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'unavailable' });
    expect((err as Error).cause).toBeInstanceOf(TypeError);
  });

  it('times out a hung IMDS per attempt and reports unavailable', async () => {
    const f = scriptedFetch(['hang']);
    const c = createImdsClient({ endpoint: 'http://imds', fetch: f.fn, attemptTimeoutMs: 20, maxAttempts: 2, sleep: fastSleep });
    const err = await c.getToken('r', {}).catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'unavailable' });
    expect((err as Error).message).toContain('did not answer within 20 ms');
    expect(f.calls).toHaveLength(2);
  });

  it('does not sleep past its total budget', async () => {
    let t = 0;
    const f = scriptedFetch([{ status: 503, body: '', headers: { 'retry-after': '60' } }]);
    const c = createImdsClient({
      endpoint: 'http://imds',
      fetch: f.fn,
      now: () => t,
      sleep: async (ms) => void (t += ms),
      totalBudgetMs: 10_000,
    });
    await expect(c.getToken('r', {})).rejects.toMatchObject({ kind: 'upstream', status: 503 });
    expect(f.calls).toHaveLength(1);
  });
});
