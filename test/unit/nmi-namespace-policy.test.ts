// NMI's pure re-check of the namespace identity policy, and the verified managed-identity fetch it enables.
import { describe, expect, it } from 'vitest';
import { parseNamespacePolicy, PERMITTED_IDENTITIES_ANNOTATION as KEY } from '../../src/crds/namespace-policy.js';
import type { AzureIdentity, PodView } from '../../src/crds/types.js';
import { namespacePolicyDenial } from '../../src/nmi/core/namespace-policy.js';
import { createTokenProvider, identityCacheKey, TokenError, tokenErrorHttpStatus } from '../../src/nmi/tokens/index.js';

const A = '/subscriptions/s/resourceGroups/team-a/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a';
const meta = (namespace: string, name: string) => ({
  namespace, name, uid: `u-${name}`, resourceVersion: '1', labels: {}, annotations: {}, creationTimestamp: '', finalizers: [], deleting: false,
});
const identity = (namespace: string, resourceID: string): AzureIdentity => ({
  ...meta(namespace, 'id'), type: 0, invalidType: '', resourceID, clientID: '0000aaaa-0000-0000-0000-000000000000', clientPassword: null,
  tenantID: '', auxiliaryTenantIDs: [], adEndpoint: '', adResourceID: '', namespaced: false,
});
const pod = (namespace: string): PodView => ({
  namespace, name: 'p', uid: 'u', resourceVersion: '1', labels: {}, nodeName: 'n', podIP: '10.0.0.1', podIPs: ['10.0.0.1'],
  phase: 'Running', hostNetwork: false, deleting: false, ownerReferences: [],
});

describe('NMI namespace policy denial', () => {
  const policies = new Map([['team-a', parseNamespacePolicy({ [KEY]: A })], ['team-b', parseNamespacePolicy({})]]);

  it('permits what both namespaces permit', () => {
    expect(namespacePolicyDenial(policies, pod('team-a'), identity('team-a', A))).toBeUndefined();
  });

  it("refuses with 403 and a body naming the annotation and the pod's own namespace only", () => {
    // team-a's identity object handed to a team-b pod by a hand-written AAI.
    const denial = namespacePolicyDenial(policies, pod('team-b'), identity('team-a', A));
    expect(denial?.status).toBe(403);
    expect(denial?.body).toContain(KEY);
    expect(denial?.body).toContain('team-b/p');
    expect(denial?.body).not.toContain('team-a');
    expect(denial?.body).not.toContain(A);
    expect(denial?.reason).toContain('Namespace team-b');
  });

  it('refuses when the identity object sits in a namespace that does not permit it, even if the pod\'s does', () => {
    const both = new Map([['team-a', parseNamespacePolicy({ [KEY]: A })], ['team-b', parseNamespacePolicy({ [KEY]: A })]]);
    expect(namespacePolicyDenial(both, pod('team-a'), identity('team-b', A))).toBeUndefined();
    const denial = namespacePolicyDenial(policies, pod('team-a'), identity('team-b', A));
    expect(denial?.reason).toContain('Namespace team-b');
    expect(denial?.body).not.toContain('team-b');
  });
});

describe('verified managed identity fetch (verifyManagedIdentity)', () => {
  function provider(answerClientId: string | undefined) {
    const urls: URL[] = [];
    const fetch = (async (input: string | URL | Request) => {
      const u = new URL(String(input));
      urls.push(u);
      const body = {
        access_token: `tok-${urls.length}`, expires_on: String(Math.floor(Date.now() / 1000) + 3600), resource: 'r',
        ...(answerClientId ? { client_id: answerClientId } : {}),
      };
      return new Response(JSON.stringify(body), { status: 200 });
    }) as typeof globalThis.fetch;
    const p = createTokenProvider({ imds: { endpoint: 'http://imds.invalid', fetch, maxAttempts: 1 }, secrets: { get: async () => ({}) }, verifyManagedIdentity: true, cache: { negativeTtlMs: 0 } });
    return { p, urls };
  }
  const id = { cacheKey: identityCacheKey({ namespace: 'team-b', name: 'id', uid: 'u', resourceVersion: '1' }), namespace: 'team-b', type: 0 as const, clientID: 'AAAA-1', resourceID: A };

  it('asks IMDS by msi_res_id and accepts the token of the declared client ID (case-insensitive)', async () => {
    const { p, urls } = provider('aaaa-1');
    expect((await p.getTokens(id, 'r'))[0]?.accessToken).toBe('tok-1');
    expect(urls[0]?.searchParams.get('msi_res_id')).toBe(A);
    expect(urls[0]?.searchParams.has('client_id')).toBe(false);
  });

  it('refuses, with a 403-mapped error and nothing cached, a token for another client ID or without one', async () => {
    for (const answer of ['bbbb-2', undefined]) {
      const { p, urls } = provider(answer);
      const err = await p.getTokens(id, 'r').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TokenError);
      expect(tokenErrorHttpStatus(err)).toBe(403);
      expect(p.peekTokens(id, 'r')).toBeUndefined();
      await p.getTokens(id, 'r').catch(() => undefined);
      expect(urls).toHaveLength(2);
    }
  });
});
