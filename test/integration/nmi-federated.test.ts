// NMI in federated mode against both emulators: the API emulator (TLS, its service-account issuer published) mints the
// pod-bound tokens NMI asks for, the Azure emulator's Azure AD fetches the issuer's keys and exchanges them through the
// federated identity credentials seeded here with putFederatedCredential. AzureIdentities, bindings and AAIs are
// written directly (no MIC). What is pinned: a Federated pod's token is its identity's and never comes from IMDS; the
// service-account token of each exchange is bound to the calling pod; service accounts never share tokens; Azure AD's
// refusals and a deleted credential are IMDS-shaped answers in bounded time; attached and federated side by side; and
// without --enable-federated-identities a Federated pod gets 403 and the log names the flag.
import { Writable } from 'node:stream';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FEDERATED_AUDIENCE, federatedCredentialName, serviceAccountSubject } from '../../src/crds/federation.js';
import { decodeToken } from '../helpers/azure.js';
import { accessTokenOf, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type RecordedTokenRequest, type Reply, type WorldIdentity, type WorldPod } from '../helpers/nmi-world.js';

const tokenPath = (resource = VAULT) => `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(resource)}`;
const NS = 'team-a';

/** NMI's log lines, parsed. */
function lineCollector() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const text of chunk.toString('utf8').split('\n')) if (text.trim() !== '') lines.push(JSON.parse(text) as Record<string, unknown>);
      done();
    },
  });
  return { lines, logger: pino({ level: 'info' }, stream) };
}

function claimsOf(reply: Reply) {
  expect(reply.status, reply.body).toBe(200);
  return decodeToken(accessTokenOf(reply));
}

/** Calls until the answer is `status` (the propagation window running out), at most `timeoutMs`. */
async function untilStatus(world: NmiWorld, ip: string, status: number, timeoutMs = 10_000): Promise<Reply> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const reply = await world.call(ip, tokenPath());
    if (reply.status === status || Date.now() > deadline) return reply;
  }
}

/** The pod a recorded TokenRequest's token is bound to, from the token's own claims and the request's boundObjectRef. */
function boundPod(r: RecordedTokenRequest): { uid: unknown; name: unknown; sub: unknown; aud: unknown; ref: unknown } {
  const payload = r.token.split('.')[1] ?? '';
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown> & { 'kubernetes.io'?: { pod?: { uid?: string; name?: string } } };
  const spec = r.request['spec'] as { boundObjectRef?: unknown };
  return { uid: claims['kubernetes.io']?.pod?.uid, name: claims['kubernetes.io']?.pod?.name, sub: claims['sub'], aud: claims['aud'], ref: spec.boundObjectRef };
}

describe('NMI federated mode against both emulators', () => {
  let world: NmiWorld;
  const log = lineCollector();
  const imdsCalls = () => world.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token');
  const exchanges = () => world.azure.emulator.requestLog().filter((e) => e.operation === 'aad_token');

  beforeAll(async () => {
    // Short propagation bounds (defaults: 10 s in-call, 5 min window), so that both answers are seen in a test.
    world = await startNmiWorld({ federation: { maxPropagationWaitMs: 1_000, propagationRetryMs: 200, propagationWindowMs: 1_500 }, logger: log.logger });
  }, 60_000);
  afterAll(async () => {
    await world?.stop();
  });

  /** A pod of `sa` bound (AAI Assigned) to `identity`; `prunedCopy`: the AAI's identity copy without spec.mode. */
  const boundPodOf = async (name: string, ip: string, sa: string, identity: WorldIdentity, prunedCopy = false): Promise<WorldPod> => {
    const pod = await world.pod(name, ip, { namespace: NS, serviceAccountName: sa });
    const spec = { ...(identity.cr['spec'] as Record<string, unknown>) };
    if (prunedCopy) delete spec['mode'];
    await world.assign(pod, { ...identity, cr: { ...identity.cr, spec } });
    return pod;
  };

  it("serves a Federated pod its identity's token (appid, oid, xms_mirid) by exchanging a token bound to that pod, never through IMDS", async () => {
    const id = await world.federatedIdentity('fed-web', { namespace: NS, serviceAccounts: ['web'] });
    const pod = await boundPodOf('web-1', '127.0.1.11', 'web', id);
    world.azure.emulator.clearRequestLog();
    const before = world.tokenRequests.length;
    const claims = claimsOf(await world.call(pod.ip, tokenPath()));
    expect(claims).toMatchObject({ appid: id.clientId, oid: id.principalId, xms_mirid: id.resourceId, aud: VAULT });
    expect(imdsCalls()).toEqual([]);
    const made = world.tokenRequests.slice(before);
    expect(made).toHaveLength(1);
    expect(made[0]).toMatchObject({ namespace: NS, serviceAccount: 'web', status: 201 });
    expect(boundPod(made[0]!)).toEqual({
      uid: pod.uid,
      name: pod.name,
      sub: serviceAccountSubject(NS, 'web'),
      aud: [FEDERATED_AUDIENCE],
      ref: { apiVersion: 'v1', kind: 'Pod', name: pod.name, uid: pod.uid },
    });
    expect((made[0]!.request['spec'] as { expirationSeconds?: number }).expirationSeconds).toBe(600);
    // Warm: from the cache, nothing minted, nothing exchanged.
    expect(claimsOf(await world.call(pod.ip, tokenPath())).appid).toBe(id.clientId);
    expect(world.tokenRequests.length - before).toBe(1);
    expect(exchanges()).toHaveLength(1);
  });

  it('reads the mode from the live AzureIdentity when the AAI copy lost spec.mode (original AAI schema installed)', async () => {
    const id = await world.federatedIdentity('fed-pruned', { namespace: NS, serviceAccounts: ['pruned'] });
    const pod = await boundPodOf('pruned-1', '127.0.1.12', 'pruned', id, true);
    world.azure.emulator.clearRequestLog();
    expect(claimsOf(await world.call(pod.ip, tokenPath())).xms_mirid).toBe(id.resourceId);
    expect(imdsCalls()).toEqual([]);
  });

  it('shares tokens between pods of one service account, mints for each exchange, and never hands one service account another’s', async () => {
    const id = await world.federatedIdentity('fed-shared', { namespace: NS, serviceAccounts: ['a'] });
    const a1 = await boundPodOf('a-1', '127.0.1.21', 'a', id);
    const a2 = await boundPodOf('a-2', '127.0.1.22', 'a', id);
    const b1 = await boundPodOf('b-1', '127.0.1.23', 'b', id);
    const before = world.tokenRequests.length;
    const first = await world.call(a1.ip, tokenPath());
    expect(claimsOf(first).appid).toBe(id.clientId);
    // Pod a-2 runs as the same service account: served from the entry a-1 warmed, no new TokenRequest.
    const second = await world.call(a2.ip, tokenPath());
    expect(accessTokenOf(second)).toBe(accessTokenOf(first));
    expect(world.tokenRequests.length - before).toBe(1);
    // Pod b-1 is bound to the same identity, but its service account has no credential: no token. Within the
    // propagation window NMI cannot tell a missing credential from a new one (503, retry); past it, 403.
    world.azure.emulator.clearRequestLog();
    const propagating = await world.call(b1.ip, tokenPath());
    expect(propagating.status, propagating.body).toBe(503);
    expect(propagating.body).not.toContain('access_token');
    const refused = await untilStatus(world, b1.ip, 403);
    expect(refused.status, refused.body).toBe(403);
    expect(refused.body).toContain('no federated identity credential');
    expect(refused.body).not.toContain('access_token');
    expect(refused.body).not.toMatch(/AADSTS|system:serviceaccount/);
    const forB = world.tokenRequests.slice(before + 1);
    expect(forB.length).toBeGreaterThan(0);
    for (const r of forB) expect(boundPod(r)).toMatchObject({ uid: b1.uid, sub: serviceAccountSubject(NS, 'b') });
    // Every exchange presented its own, newly minted token.
    expect(new Set(world.tokenRequests.map((r) => r.token)).size).toBe(world.tokenRequests.length);
    expect(imdsCalls()).toEqual([]);
  });

  it('puts a Warning event on the pod when Azure AD refuses, naming no AADSTS code', async () => {
    const events = await world.core.listNamespacedEvent({ namespace: NS });
    const mine = events.items.filter((e) => e.involvedObject.name === 'b-1' && e.reason === 'FederatedTokenFailed');
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ type: 'Warning', involvedObject: { kind: 'Pod', namespace: NS } });
    expect(mine[0]?.message).not.toMatch(/AADSTS/);
  });

  it('answers a deleted credential with an IMDS-shaped 503 after a bounded wait that says so, then 403 for good', async () => {
    const id = await world.federatedIdentity('fed-deleted', { namespace: NS, serviceAccounts: ['gone'] });
    const pod = await boundPodOf('gone-1', '127.0.1.31', 'gone', id);
    const issuer = world.api.server.serviceAccountIssuer.issuer;
    expect(world.azure.emulator.deleteFederatedCredential(id.resourceId, federatedCredentialName(issuer, serviceAccountSubject(NS, 'gone')))).toBe(true);
    const started = Date.now();
    const reply = await world.call(pod.ip, tokenPath());
    const tookMs = Date.now() - started;
    expect(reply.status, reply.body).toBe(503);
    expect(reply.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(reply.body).toContain('retry shortly');
    expect(tookMs).toBeLessThan(5_000); // the in-call wait is 1 s here (10 s by default), never a hang
    expect(log.lines.some((l) => l['msg'] === 'federated credential still propagating; answering 503 so the client retries')).toBe(true);
    // Past the propagation window: 403 at once, no in-call wait.
    const final = await untilStatus(world, pod.ip, 403);
    expect(final.status, final.body).toBe(403);
    const t = Date.now();
    const again = await world.call(pod.ip, tokenPath());
    expect(again.status).toBe(403);
    expect(Date.now() - t).toBeLessThan(1_000);
  });

  it('serves an Attached identity through IMDS and a Federated one by federation on the same NMI', async () => {
    const attached = await world.managedIdentity('att-mixed', { namespace: NS });
    const fed = await world.federatedIdentity('fed-mixed', { namespace: NS, serviceAccounts: ['mixed'] });
    const ap = await world.pod('att-1', '127.0.1.41', { namespace: NS });
    await world.assign(ap, attached);
    const fp = await boundPodOf('fed-1', '127.0.1.42', 'mixed', fed);
    world.azure.emulator.clearRequestLog();
    const before = world.tokenRequests.length;
    expect(claimsOf(await world.call(ap.ip, tokenPath())).xms_mirid).toBe(attached.resourceId);
    expect(imdsCalls()).toHaveLength(1);
    expect(world.tokenRequests.length).toBe(before);
    expect(claimsOf(await world.call(fp.ip, tokenPath())).xms_mirid).toBe(fed.resourceId);
    expect(imdsCalls()).toHaveLength(1);
    expect(world.tokenRequests.length).toBe(before + 1);
  });

  it('mints service-account tokens only for pods its own index places at the caller’s IP on this node', async () => {
    const before = world.tokenRequests.length;
    const stranger = await world.call('127.0.1.99', tokenPath());
    expect(stranger.status).toBe(500);
    // A pod of another node at a known IP is not in this NMI's index either.
    const id = await world.federatedIdentity('fed-elsewhere', { namespace: NS, serviceAccounts: ['elsewhere'] });
    await world.core.createNamespacedServiceAccount({ namespace: NS, body: { metadata: { name: 'elsewhere' } } });
    await world.core.createNamespacedPod({ namespace: NS, body: { metadata: { name: 'far-1', labels: { aadpodidbinding: 'far-1' } }, spec: { nodeName: 'node-9', serviceAccountName: 'elsewhere', containers: [{ name: 'c', image: 'x' }] } } });
    await world.core.patchNamespacedPodStatus(
      { name: 'far-1', namespace: NS, body: { status: { phase: 'Running', podIP: '127.0.1.98', podIPs: [{ ip: '127.0.1.98' }] } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await world.assign({ name: 'far-1', namespace: NS, uid: '', ip: '127.0.1.98' }, id);
    const far = await world.call('127.0.1.98', tokenPath());
    expect(far.status).toBe(500);
    expect(world.tokenRequests.length).toBe(before);
  });
});

describe('NMI without --enable-federated-identities', () => {
  let world: NmiWorld;
  const log = lineCollector();

  beforeAll(async () => {
    world = await startNmiWorld({ federation: { enabled: false }, logger: log.logger });
  }, 60_000);
  afterAll(async () => {
    await world?.stop();
  });

  it('answers a Federated pod 403 with the generic text, logs the flag, and asks neither IMDS nor TokenRequest', async () => {
    const id = await world.federatedIdentity('fed-off', { namespace: NS, serviceAccounts: ['web'] });
    const pod = await world.pod('web-1', '127.0.1.51', { namespace: NS, serviceAccountName: 'web' });
    await world.assign(pod, id);
    world.azure.emulator.clearRequestLog();
    const reply = await world.call(pod.ip, tokenPath());
    expect(reply.status).toBe(403);
    expect(reply.body).toBe(`failed to get a token for identity ${NS}/fed-off: token acquisition failed; the NMI log on this node says why\n`);
    expect(world.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token' || e.operation === 'aad_token')).toEqual([]);
    expect(world.tokenRequests).toEqual([]);
    const line = log.lines.find((l) => typeof l['msg'] === 'string' && (l['msg'] as string).includes('federated identity refused'));
    expect(line?.['msg']).toContain('--enable-federated-identities');
    expect(line).toMatchObject({ pod: 'web-1', namespace: NS });
  });
});
