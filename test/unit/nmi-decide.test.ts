// NMI decides a token request in one function (core/decide.ts). A warm request has its facts at hand at once (the
// pod in the cache, the identity assigned, the token cached); a cold one gets them one by one after waits (the pod
// cache's wait, the assignment wait, a live check, a fetch). For every case below both orders must give the same
// answer: same status, same bytes, same refusal, same log line. Only the cache outcome (hit or miss) may differ.

import { describe, expect, it } from 'vitest';
import { decideToken, type TokenSource, type Answer, type CallerLookup, type DecidePolicy, type LiveCallerCheck, type TokenFacts, type UpstreamFailure } from '../../src/nmi/core/decide.js';
import type { Token } from '../../src/nmi/core/imds-body.js';
import type { Selection } from '../../src/nmi/core/select.js';
import { parseTokenRequest } from '../../src/nmi/core/token-request.js';
import type { AzureIdentity, PodView } from '../../src/crds/types.js';
import { PERMITTED_IDENTITIES_ANNOTATION, parseNamespacePolicy } from '../../src/crds/namespace-policy.js';

const meta = (namespace: string, name: string) => ({
  namespace, name, uid: `uid-${namespace}-${name}`, resourceVersion: '1', labels: {}, annotations: {},
  creationTimestamp: '', finalizers: [], deleting: false,
});

const identity: AzureIdentity = {
  ...meta('apps', 'web-id'), type: 0, invalidType: '', clientID: '11111111-1111-1111-1111-111111111111', clientPassword: null, tenantID: '',
  resourceID: '/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/web-id',
  auxiliaryTenantIDs: [], adEndpoint: '', adResourceID: '', namespaced: false,
};

function pod(name: string, uid = `uid-${name}`): PodView {
  return {
    namespace: 'apps', name, uid, resourceVersion: '1', labels: { aadpodidbinding: name },
    nodeName: 'node-0', podIP: '127.0.1.5', podIPs: ['127.0.1.5'], phase: 'Running', hostNetwork: false, deleting: false,
    ownerReferences: [],
  };
}

const web = pod('web');
const token: Token = { accessToken: 'token-web', expiresOn: 2_000_000_000, tokenType: 'Bearer', clientId: identity.clientID };
const failure = (status: 403 | 429 | 503): UpstreamFailure => ({ status, publicMessage: `upstream said ${status}`, ...(status === 429 ? { retryAfterSeconds: 3 } : {}), error: new Error('x') });

const asPod = (p: PodView): CallerLookup => ({ kind: 'pod', pod: p });
const use: Selection = { kind: 'identity', identity };
// Federated: the AAI's copy lost spec.mode to pruning (reads Attached); the live AzureIdentity says Federated.
const federatedLive: AzureIdentity = { ...identity, mode: 'Federated', invalidMode: '' };
const fed: Selection = { kind: 'identity', identity, live: federatedLive };
const fedCopyOnly: Selection = { kind: 'identity', identity: federatedLive };
const switchedBack: Selection = { kind: 'identity', identity: federatedLive, live: { ...identity, mode: 'Attached' } };
const fedChanging: Selection = { kind: 'identity', identity, live: { ...federatedLive, clientID: '22222222-2222-2222-2222-222222222222' } };
const invalidMode: Selection = { kind: 'identity', identity, live: { ...identity, mode: null, invalidMode: 'Bogus' } };
const fedOn: Partial<DecidePolicy> = { federatedIdentities: true };
const pending: Selection = { kind: 'pending', created: true, reason: 'identity for pod apps/web is not yet Assigned' };

/** The world one request meets: what each fact turns out to be. */
interface Case {
  readonly name: string;
  readonly query?: string;
  readonly header?: boolean;
  readonly ip?: string;
  readonly lookup?: CallerLookup;
  /** The selection at the first look, and after the wait (default: the same). */
  readonly selection?: Selection;
  readonly settled?: Selection;
  /** Who holds the IP after a wait (default: the same caller). */
  readonly again?: CallerLookup;
  readonly learnFailure?: UpstreamFailure;
  readonly live?: 'fresh' | LiveCallerCheck;
  readonly tokens?: { readonly kind: 'tokens'; readonly tokens: readonly Token[] } | { readonly kind: 'failed'; readonly failure: UpstreamFailure };
  readonly policy?: Partial<DecidePolicy>;
  /** The token source decide must ask the fetch from (default attached), when it asks for one. */
  readonly source?: TokenSource;
  /** The refusal the answer must carry. */
  readonly refusal?: string;
  /** What the answer must be (status), so that a case cannot pass by both orders failing the same odd way. */
  readonly status: number | 'node';
}

const denyAll = new Map([['apps', parseNamespacePolicy({ [PERMITTED_IDENTITIES_ANNOTATION]: '/subscriptions/other/*' })]]);

const cases: readonly Case[] = [
  { name: 'the Metadata header is missing', header: false, status: 400 },
  { name: 'the remote address is empty', ip: '', status: 500 },
  { name: 'the query names two identities', query: 'resource=r&client_id=a&object_id=b', status: 400 },
  { name: 'no resource', query: 'api-version=2018-02-01', status: 400 },
  { name: 'no pod holds the IP', lookup: { kind: 'unknown', reason: 'no pod' }, status: 500 },
  { name: 'two pods claim the IP', lookup: { kind: 'ambiguous', reason: 'two pods' }, status: 500 },
  { name: 'a cached token of the assigned identity', status: 200 },
  { name: 'two tokens (a service principal with an auxiliary tenant)', tokens: { kind: 'tokens', tokens: [token, { ...token, accessToken: 'aux' }] }, status: 200 },
  { name: 'no token was issued', tokens: { kind: 'tokens', tokens: [] }, status: 503 },
  { name: 'the upstream refused', tokens: { kind: 'failed', failure: failure(403) }, status: 403 },
  { name: 'the upstream is unreachable', tokens: { kind: 'failed', failure: failure(503) }, status: 503 },
  { name: 'the pod is over its miss rate', tokens: { kind: 'failed', failure: failure(429) }, status: 429 },
  { name: 'the namespace policy does not permit the identity', policy: { namespacePolicies: denyAll }, status: 403 },
  { name: 'the namespace policy has no entry for the namespace', policy: { namespacePolicies: new Map() }, status: 403 },
  { name: 'an identity assigned after a wait', selection: pending, settled: use, status: 200 },
  { name: 'still not assigned after the wait', selection: pending, status: 404 },
  { name: 'still not assigned, with --set-retry-after-header', selection: pending, policy: { setRetryAfterHeader: true }, status: 503 },
  { name: 'nothing will match (managed mode)', selection: { kind: 'none', reason: 'no binding' }, status: 404 },
  { name: 'settled without the identity asked for', selection: { kind: 'unbound', reason: 'not bound' }, status: 400 },
  {
    name: 'an object_id matched after reading the pod’s own tokens',
    query: 'resource=r&object_id=b6dd1df6-cb71-4091-8637-a5d7e4297306',
    selection: { kind: 'unbound', reason: 'not bound' },
    settled: use,
    status: 200,
  },
  {
    name: 'an object_id whose own tokens failed',
    query: 'resource=r&object_id=b6dd1df6-cb71-4091-8637-a5d7e4297306',
    selection: { kind: 'unbound', reason: 'not bound' },
    learnFailure: failure(503),
    status: 503,
  },
  { name: 'the pod at the IP changed while the request waited', selection: pending, settled: use, again: asPod(pod('web', 'uid-new')), status: 500 },
  { name: 'the IP is nobody’s after the wait', selection: pending, settled: use, again: { kind: 'unknown', reason: 'gone' }, status: 500 },
  { name: 'a stale view the API server refutes', live: { kind: 'refuted', reason: 'deleted' }, status: 503 },
  { name: 'a stale view and an unreachable API server', live: { kind: 'unavailable', reason: 'timeout' }, status: 503 },
  { name: 'a stale view the API server confirms', live: { kind: 'confirmed' }, status: 200 },
  { name: 'a stale view refuted, for a pod with nothing assigned', live: { kind: 'refuted', reason: 'deleted' }, selection: pending, status: 503 },
  { name: 'an excepted pod (the node path)', selection: { kind: 'node', via: 'exception', reason: 'exception' }, status: 'node' },
  // Federated identities: the same checks first, then the federated source; never IMDS.
  { name: 'a Federated identity (live mode, AAI copy pruned)', selection: fed, policy: fedOn, source: 'federated', status: 200 },
  { name: 'a Federated identity NMI sees only through the AAI copy', selection: fedCopyOnly, policy: fedOn, source: 'federated', status: 200 },
  { name: 'a Federated identity assigned after a wait', selection: pending, settled: fed, policy: fedOn, source: 'federated', status: 200 },
  { name: 'an identity switched back to Attached (AAI copy still Federated)', selection: switchedBack, policy: fedOn, source: 'attached', status: 200 },
  { name: 'a Federated identity without --enable-federated-identities', selection: fed, refusal: 'federation-disabled', status: 403 },
  { name: 'a Federated identity the namespace policy does not permit', selection: fed, policy: { ...fedOn, namespacePolicies: denyAll }, refusal: 'namespace-policy', status: 403 },
  { name: 'a Federated identity and a stale view refuted', selection: fed, policy: fedOn, live: { kind: 'refuted', reason: 'deleted' }, refusal: 'stale-view', status: 503 },
  { name: 'a Federated identity from an unknown caller', selection: fed, policy: fedOn, lookup: { kind: 'unknown', reason: 'no pod' }, status: 500 },
  { name: 'a Federated identity Azure AD refuses', selection: fed, policy: fedOn, source: 'federated', tokens: { kind: 'failed', failure: failure(403) }, refusal: 'upstream-error', status: 403 },
  { name: 'a Federated identity still propagating', selection: fed, policy: fedOn, source: 'federated', tokens: { kind: 'failed', failure: failure(503) }, status: 503 },
  { name: 'a Federated identity whose clientID changed under its AAI', selection: fedChanging, policy: fedOn, refusal: 'identity-changing', status: 503 },
  { name: 'an identity with an invalid spec.mode', selection: invalidMode, policy: fedOn, refusal: 'invalid-mode', status: 403 },
];

const basePolicy: DecidePolicy = { metadataHeaderRequired: true, setRetryAfterHeader: false, namespacePolicies: undefined, maxStalenessMs: 120_000 };

type Mutable = { -readonly [K in keyof TokenFacts]: TokenFacts[K] };

/**
 * Runs decide to its answer. Warm: every fact that the caches hold is given at the first look (the pod, the selection,
 * the live state, a cached token); cold: each is supplied only when decide asks for it, as after a wait or a fetch.
 */
function run(c: Case, warm: boolean): Answer | 'node' {
  const policy = { ...basePolicy, ...c.policy };
  const lookup = c.lookup ?? asPod(web);
  const first = c.selection ?? use;
  const settled = c.settled ?? first;
  const tokens = c.tokens ?? { kind: 'tokens', tokens: [token] };
  const fetched: TokenFacts['tokens'] = tokens.kind === 'tokens' ? { ...tokens, cache: 'miss' } : tokens;
  const facts: Mutable = { ip: c.ip ?? '127.0.1.5', metadataHeader: c.header ?? true, parsed: parseTokenRequest(c.query ?? 'resource=https%3A%2F%2Fvault.azure.net') };
  if (warm) {
    facts.caller = { lookup, waited: false };
    facts.selection = { selection: first, final: false };
    facts.live = c.live ?? 'fresh';
    if (tokens.kind === 'tokens' && tokens.tokens.length > 0) facts.tokens = { ...tokens, cache: 'hit' };
  }
  for (let step = 0; step < 12; step++) {
    const verdict = decideToken(facts, policy);
    if (verdict.kind === 'answer') return verdict.answer;
    const need = verdict.need;
    switch (need.kind) {
      case 'caller':
        facts.caller = { lookup, waited: true };
        break;
      case 'selection':
        facts.selection = { selection: settled, final: true, again: c.again ?? lookup, ...(c.learnFailure ? { learnFailure: c.learnFailure } : {}) };
        break;
      case 'live':
        facts.live = c.live ?? 'fresh';
        break;
      case 'tokens':
        if (need.source !== (c.source ?? 'attached')) throw new Error(`asked the ${need.source} source`);
        facts.tokens = fetched;
        break;
      case 'node':
        return 'node';
    }
  }
  throw new Error('decide never answered');
}

/** The answer without the cache outcome, which is the one thing warm and cold may differ in. */
function comparable(a: Answer | 'node') {
  if (a === 'node') return a;
  const { cache: _cache, ...rest } = a;
  return rest;
}

describe('decideToken', () => {
  it.each(cases)('answers a warm and a cold request alike when $name', (c) => {
    const warm = run(c, true);
    const cold = run(c, false);
    expect(comparable(warm)).toEqual(comparable(cold));
    expect(warm === 'node' ? 'node' : warm.status).toBe(c.status);
    if (c.refusal !== undefined) expect(warm !== 'node' && warm.refusal).toBe(c.refusal);
  });

  it('asks the federated source for a Federated identity, with the live identity, and never the attached one', () => {
    const facts: TokenFacts = {
      ip: '127.0.1.5', metadataHeader: true, parsed: parseTokenRequest('resource=r'),
      caller: { lookup: asPod(web), waited: false }, selection: { selection: fed, final: false }, live: 'fresh',
    };
    expect(decideToken(facts, { ...basePolicy, federatedIdentities: true })).toMatchObject({
      kind: 'need', need: { kind: 'tokens', source: 'federated', identity: federatedLive, pod: web },
    });
  });

  it('refuses a Federated identity without the flag with the generic text, the log naming the flag', () => {
    const facts: TokenFacts = {
      ip: '127.0.1.5', metadataHeader: true, parsed: parseTokenRequest('resource=r'),
      caller: { lookup: asPod(web), waited: false }, selection: { selection: fed, final: false }, live: 'fresh',
      // Even a token in the cache (fetched before the flag was turned off) is not served.
      tokens: { kind: 'tokens', tokens: [token], cache: 'hit' },
    };
    const verdict = decideToken(facts, basePolicy);
    expect(verdict.kind).toBe('answer');
    const a = (verdict as { answer: Answer }).answer;
    expect(a.status).toBe(403);
    expect(a.body).toEqual({ kind: 'text', message: 'failed to get a token for identity apps/web-id: token acquisition failed; the NMI log on this node says why' });
    expect(a.log?.msg).toContain('--enable-federated-identities');
  });

  it('puts a Warning event on the pod when Azure AD refuses a federated token, and not for attached failures', () => {
    const base = { ip: '127.0.1.5', metadataHeader: true, parsed: parseTokenRequest('resource=r'), caller: { lookup: asPod(web), waited: false }, live: 'fresh' as const, tokens: { kind: 'failed' as const, failure: failure(403) } };
    const f = decideToken({ ...base, selection: { selection: fed, final: false } }, { ...basePolicy, federatedIdentities: true });
    expect(f).toMatchObject({ kind: 'answer', answer: { status: 403, event: { reason: 'FederatedTokenFailed' } } });
    const a = decideToken({ ...base, selection: { selection: use, final: false } }, { ...basePolicy, federatedIdentities: true });
    expect((a as { answer: Answer }).answer.event).toBeUndefined();
  });

  it('answers a warm request from the facts at hand, without asking for anything', () => {
    const facts: TokenFacts = {
      ip: '127.0.1.5', metadataHeader: true, parsed: parseTokenRequest('resource=r'),
      caller: { lookup: asPod(web), waited: false }, selection: { selection: use, final: false }, live: 'fresh',
      tokens: { kind: 'tokens', tokens: [token], cache: 'hit' },
    };
    expect(decideToken(facts, basePolicy)).toMatchObject({ kind: 'answer', answer: { status: 200, cache: 'hit', body: { kind: 'tokens', tokens: [token] } } });
  });

  it('asks for a live check before answering anything about the pod when the view is stale, even a refusal', () => {
    const facts: TokenFacts = {
      ip: '127.0.1.5', metadataHeader: true, parsed: parseTokenRequest('resource=r'),
      caller: { lookup: asPod(web), waited: false }, selection: { selection: { kind: 'unbound', reason: 'x' }, final: false },
    };
    expect(decideToken(facts, basePolicy)).toEqual({ kind: 'need', need: { kind: 'live', pod: web } });
  });

  it('never serves a token before the namespace policy was checked', () => {
    const facts: TokenFacts = {
      ip: '127.0.1.5', metadataHeader: true, parsed: parseTokenRequest('resource=r'),
      caller: { lookup: asPod(web), waited: false }, selection: { selection: use, final: false }, live: 'fresh',
      tokens: { kind: 'tokens', tokens: [token], cache: 'hit' },
    };
    const verdict = decideToken(facts, { ...basePolicy, namespacePolicies: denyAll });
    expect(verdict).toMatchObject({ kind: 'answer', answer: { status: 403, refusal: 'namespace-policy' } });
  });
});
