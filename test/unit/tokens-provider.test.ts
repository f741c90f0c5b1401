import { describe, expect, it } from 'vitest';
import { createTokenProvider, identityCacheKey, tokenErrorHttpStatus, tokenRequestIdentityFrom, TokenError } from '../../src/nmi/tokens/index.js';
import type { TokenRequestIdentity } from '../../src/nmi/tokens/index.js';

/** A fake IMDS as a fetch function that answers with a token naming the client id it was asked for. */
function fakeImds() {
  const urls: URL[] = [];
  const fn = (async (input: string | URL | Request) => {
    const u = new URL(String(input));
    urls.push(u);
    const who = u.searchParams.get('client_id') ?? u.searchParams.get('msi_res_id') ?? 'system';
    if (who === 'unattached') return new Response('{"error":"invalid_request","error_description":"Identity not found"}', { status: 400 });
    const body = { access_token: `tok-for-${who}`, expires_on: String(Math.floor(Date.now() / 1000) + 3600), resource: u.searchParams.get('resource') };
    return new Response(JSON.stringify(body), { status: 200 });
  }) as typeof fetch;
  return { fn, urls };
}

const uami = (name: string, clientID: string, rv = '1'): TokenRequestIdentity => ({
  cacheKey: identityCacheKey({ namespace: 'default', name, uid: `uid-${name}`, resourceVersion: rv }),
  namespace: 'default',
  type: 0,
  clientID,
});

function provider() {
  const imds = fakeImds();
  const p = createTokenProvider({
    imds: { endpoint: 'http://imds.invalid', fetch: imds.fn, maxAttempts: 1 },
    secrets: { get: async () => ({}) },
  });
  return { p, imds };
}

describe('createTokenProvider', () => {
  it("asks IMDS for the identity's own client id even when the pod asked for another", async () => {
    const { p, imds } = provider();
    const [t] = await p.getTokens(uami('a', 'client-a'), 'https://vault.azure.net', { requestedClientId: 'client-b' });
    expect(t?.accessToken).toBe('tok-for-client-a');
    expect(imds.urls[0]?.searchParams.get('client_id')).toBe('client-a');
  });

  it('uses msi_res_id when the identity has only a resource id', async () => {
    const { p, imds } = provider();
    const id: TokenRequestIdentity = { cacheKey: 'default/r@u#1', namespace: 'default', type: 0, clientID: '', resourceID: '/subscriptions/s/rg/x' };
    await p.getTokens(id, 'r');
    expect(imds.urls[0]?.searchParams.get('msi_res_id')).toBe('/subscriptions/s/rg/x');
  });

  it('caches per identity: a second identity with the same resource gets its own token', async () => {
    const { p, imds } = provider();
    const a1 = await p.getTokens(uami('a', 'client-a'), 'r');
    const b1 = await p.getTokens(uami('b', 'client-b'), 'r');
    const a2 = await p.getTokens(uami('a', 'client-a'), 'r');
    expect(a1[0]?.accessToken).toBe('tok-for-client-a');
    expect(b1[0]?.accessToken).toBe('tok-for-client-b');
    expect(a2).toBe(a1);
    expect(imds.urls).toHaveLength(2);
  });

  it('node tokens are cached apart from pod identities with the same client id', async () => {
    const { p, imds } = provider();
    await p.getTokens(uami('a', 'client-a'), 'r');
    const node = await p.getNodeToken('r', { clientId: 'client-a' });
    const system = await p.getNodeToken('r');
    expect(node.accessToken).toBe('tok-for-client-a');
    expect(system.accessToken).toBe('tok-for-system');
    expect(imds.urls).toHaveLength(3);
  });

  it('invalidateIdentity drops every version of that identity', async () => {
    const { p, imds } = provider();
    await p.getTokens(uami('a', 'client-a', '1'), 'r');
    await p.getTokens(uami('a', 'client-a', '2'), 'r');
    await p.getTokens(uami('ab', 'client-ab'), 'r');
    expect(p.invalidateIdentity('default', 'a')).toBe(2);
    await p.getTokens(uami('ab', 'client-ab'), 'r');
    expect(imds.urls).toHaveLength(3);
    await p.getTokens(uami('a', 'client-a', '2'), 'r');
    expect(imds.urls).toHaveLength(4);
  });

  it('maps an IMDS refusal to 403 and everything else to 503', async () => {
    const { p } = provider();
    const err = await p.getTokens(uami('x', 'unattached'), 'r').catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'upstream', status: 400 });
    expect(tokenErrorHttpStatus(err)).toBe(403);
    expect(tokenErrorHttpStatus(new TokenError('unavailable', 'x'))).toBe(503);
    expect(tokenErrorHttpStatus(new TokenError('invalid', 'x'))).toBe(503);
    expect(tokenErrorHttpStatus(new Error('x'))).toBe(503);
  });

  it('a service principal without a secret reference is invalid (503), without any network call', async () => {
    const { p, imds } = provider();
    const sp: TokenRequestIdentity = { cacheKey: 'default/sp@u#1', namespace: 'default', type: 1, clientID: 'c', tenantID: 't' };
    await expect(p.getTokens(sp, 'r')).rejects.toMatchObject({ kind: 'invalid' });
    expect(imds.urls).toHaveLength(0);
  });
});

describe('tokenRequestIdentityFrom', () => {
  const base = {
    namespace: 'ns', name: 'id', uid: 'u1', resourceVersion: '7', labels: {}, annotations: {}, creationTimestamp: '',
    finalizers: [], deleting: false, invalidType: '', resourceID: '', clientID: 'c', clientPassword: null, tenantID: '',
    auxiliaryTenantIDs: [], adEndpoint: '', adResourceID: '', namespaced: false,
  };
  it('keys by namespace/name, uid and resourceVersion, and keeps only the fields that are set', () => {
    const t = tokenRequestIdentityFrom({ ...base, type: 1, tenantID: 't', clientPassword: { name: 's', namespace: 'ns' } });
    expect(t).toEqual({ cacheKey: 'ns/id@u1#7', namespace: 'ns', type: 1, clientID: 'c', tenantID: 't', clientPassword: { name: 's', namespace: 'ns' } });
    expect(tokenRequestIdentityFrom({ ...base, type: 0, resourceVersion: '8' }).cacheKey).not.toBe(t.cacheKey);
  });
  it('refuses an unsupported type as invalid', () => {
    expect(() => tokenRequestIdentityFrom({ ...base, type: null, invalidType: '7' })).toThrow(/unsupported type 7/);
  });
});
