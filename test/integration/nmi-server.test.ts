// NMI's HTTP behaviour with its real caches (PodIndex, NmiIdentityState) and a recording token issuer, over real
// sockets: callers bind distinct loopback addresses as their pod IPs.

import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { createNmiServer, type NmiServerConfig } from '../../src/nmi/server.js';
import { PodIndex } from '../../src/nmi/pod-index.js';
import { NmiIdentityState } from '../../src/nmi/identity-state.js';
import { createImdsProxy } from '../../src/nmi/adapters/proxy.js';
import type { TokenIssuer } from '../../src/nmi/ports.js';
import { createNmiMetrics } from '../../src/nmi/metrics.js';
import type { AzureAssignedIdentity, AzureIdentity, PodView } from '../../src/crds/types.js';

const NODE = 'node-a';

const meta = (namespace: string, name: string) => ({
  namespace, name, uid: `uid-${namespace}-${name}`, resourceVersion: '1', labels: {}, annotations: {},
  creationTimestamp: '', finalizers: [], deleting: false,
});

function identity(name: string, clientID: string): AzureIdentity {
  return {
    ...meta('default', name), type: 0, invalidType: '', clientID, clientPassword: null, tenantID: '',
    resourceID: `/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${name}`,
    auxiliaryTenantIDs: [], adEndpoint: '', adResourceID: '', namespaced: false,
  };
}

function pod(name: string, ip: string, extra: Partial<PodView> = {}): PodView {
  return {
    namespace: 'apps', name, uid: `uid-${name}`, resourceVersion: '1', labels: { aadpodidbinding: name },
    nodeName: NODE, podIP: ip, podIPs: [ip], phase: 'Running', hostNetwork: false, deleting: false,
    ownerReferences: [], ...extra,
  };
}

function aai(p: PodView, id: AzureIdentity, state: AzureAssignedIdentity['state']): AzureAssignedIdentity {
  return {
    ...meta('default', `${p.name}-${p.namespace}-${id.name}`), identityRef: id, bindingRef: null,
    pod: p.name, podNamespace: p.namespace, nodeName: NODE, state, podUid: '',
  };
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(port: number, path: string, opts: { from?: string; headers?: Record<string, string>; method?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: opts.method ?? 'GET', localAddress: opts.from ?? '127.0.0.1', headers: opts.headers ?? { Metadata: 'true' } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('NMI server', () => {
  let server: Server;
  let imds: Server;
  let port: number;
  let pods: PodIndex;
  let state: NmiIdentityState;
  const issued: string[] = [];
  let tokenFailure: { status: 403 | 503; message: string } | undefined;
  let config: { -readonly [K in keyof NmiServerConfig]: NmiServerConfig[K] };
  const metrics = createNmiMetrics();
  /** Count of `aadpodidentity_nmi_identity_wait_duration_seconds` for a result. */
  const waits = async (result: 'ready' | 'timeout') =>
    (await metrics.registry.getSingleMetric('aadpodidentity_nmi_identity_wait_duration_seconds')!.get()).values.find(
      (v) => (v as { metricName?: string }).metricName?.endsWith('_count') && v.labels['result'] === result,
    )?.value ?? 0;

  const tokens: TokenIssuer = {
    async tokensFor(id, resource) {
      if (tokenFailure) throw Object.assign(new Error(tokenFailure.message), { httpStatus: tokenFailure.status });
      issued.push(`${id.name}|${resource}`);
      return [{ accessToken: `token-for-${id.clientID}`, expiresOn: Math.floor(Date.now() / 1000) + 3600 }];
    },
    async nodeToken(resource, identity) {
      const id = identity.clientId ?? identity.resourceId ?? 'system';
      issued.push(`node:${id}|${resource}`);
      return { accessToken: `node-token-${id}`, clientId: identity.clientId ?? 'node-default-client', expiresOn: Math.floor(Date.now() / 1000) + 3600 };
    },
    statusForError: (e) => ((e as { httpStatus?: 403 | 503 }).httpStatus ?? 503),
  };

  beforeAll(async () => {
    imds = createServer((req, res) => {
      res.writeHead(req.url?.startsWith('/metadata/instance') ? 200 : 404, { 'content-type': 'application/json', 'x-upstream': 'imds' });
      res.end(JSON.stringify({ path: req.url, metadata: req.headers['metadata'] ?? null }));
    });
    await new Promise<void>((r) => imds.listen(0, '127.0.0.1', r));
    config = {
      metadataHeaderRequired: true, blockInstanceMetadata: false, operationMode: 'standard', forceNamespaced: false,
      micNamespace: 'default', micServiceAccount: 'aad-pod-identity-mic', retryAttemptsForCreated: 4, retryAttemptsForAssigned: 2, findIdentityRetryIntervalMs: 100,
      setRetryAfterHeader: false,
    };
    const logger = pino({ level: 'silent' });
    pods = new PodIndex({ nodeName: NODE, lookupWaitMs: 200 });
    state = new NmiIdentityState();
    state.markSynced('identities');
    server = createNmiServer({
      config, pods, identities: state, tokens, logger, metrics,
      proxy: createImdsProxy({ imdsEndpoint: `http://127.0.0.1:${(imds.address() as AddressInfo).port}`, logger }),
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    await new Promise((r) => server.close(r));
    await new Promise((r) => imds.close(r));
  });

  beforeEach(() => {
    pods.replaceAll([]);
    for (const a of state.allAssigned()) state.removeAssigned(a.namespace, a.name);
    issued.length = 0;
    tokenFailure = undefined;
  });

  const TOKEN = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net';

  it('serves each pod the token of its own identity, in the IMDS shape', async () => {
    const web = pod('web', '127.0.1.11');
    const api = pod('api', '127.0.1.12');
    pods.upsert(web);
    pods.upsert(api);
    state.upsertAssigned(aai(web, identity('id-web', 'c-web'), 'Assigned'));
    state.upsertAssigned(aai(api, identity('id-api', 'c-api'), 'Assigned'));

    const a = await call(port, TOKEN, { from: '127.0.1.11' });
    const b = await call(port, TOKEN, { from: '127.0.1.12' });
    expect(a.status).toBe(200);
    expect(a.headers['content-type']).toBe('application/json');
    const body = JSON.parse(a.body);
    expect(body).toMatchObject({ access_token: 'token-for-c-web', resource: 'https://vault.azure.net', token_type: 'Bearer' });
    expect(typeof body.expires_on).toBe('string');
    expect(JSON.parse(b.body).access_token).toBe('token-for-c-api');
  });

  it('requires the Metadata header with the IMDS JSON error', async () => {
    const reply = await call(port, TOKEN, { from: '127.0.1.11', headers: {} });
    expect(reply.status).toBe(400);
    expect(JSON.parse(reply.body)).toEqual({ error: 'invalid_request', error_description: 'Required metadata header not specified' });
    const wrong = await call(port, TOKEN, { from: '127.0.1.11', headers: { Metadata: 'True' } });
    expect(wrong.status).toBe(400);
  });

  it('refuses a missing resource with 400', async () => {
    pods.upsert(pod('web', '127.0.1.11'));
    const reply = await call(port, '/metadata/identity/oauth2/token?api-version=2018-02-01', { from: '127.0.1.11' });
    expect(reply).toMatchObject({ status: 400, body: 'parameter resource cannot be empty\n' });
  });

  it('denies an unknown caller and an IP two pods claim, without asking for a token', async () => {
    expect((await call(port, TOKEN, { from: '127.0.1.99' })).status).toBe(500);
    const one = pod('one', '127.0.1.20');
    const two = pod('two', '127.0.1.20');
    pods.upsert(one);
    pods.upsert(two);
    state.upsertAssigned(aai(one, identity('id-one', 'c-one'), 'Assigned'));
    const reply = await call(port, TOKEN, { from: '127.0.1.20' });
    expect(reply.status).toBe(500);
    expect(reply.body).toBe('failed to match pod IP 127.0.1.20 with a single live pod on this node\n');
    expect(reply.body).not.toContain('one');
    expect(issued).toEqual([]);
  });

  it('denies a caller whose pod is being deleted, and ignores finished pods holding a stale IP', async () => {
    const old = pod('old', '127.0.1.21', { deleting: true });
    pods.upsert(old);
    state.upsertAssigned(aai(old, identity('id-old', 'c-old'), 'Assigned'));
    expect((await call(port, TOKEN, { from: '127.0.1.21' })).status).toBe(500);

    pods.remove('apps', 'old');
    pods.upsert(pod('done', '127.0.1.21', { phase: 'Succeeded' }));
    const fresh = pod('fresh', '127.0.1.21');
    pods.upsert(fresh);
    state.upsertAssigned(aai(fresh, identity('id-fresh', 'c-fresh'), 'Assigned'));
    const reply = await call(port, TOKEN, { from: '127.0.1.21' });
    expect(JSON.parse(reply.body).access_token).toBe('token-for-c-fresh');
  });

  it('never gives a new pod at a reused IP the old pod’s identity', async () => {
    const old = pod('old', '127.0.1.22');
    pods.upsert(old);
    state.upsertAssigned(aai(old, identity('id-old', 'c-old'), 'Assigned'));
    pods.remove('apps', 'old');
    pods.upsert(pod('new', '127.0.1.22', { uid: 'uid-new-pod' }));
    const reply = await call(port, TOKEN, { from: '127.0.1.22' });
    expect(reply.status).toBe(404);
    expect(issued).toEqual([]);
  });

  it('answers as soon as the identity becomes Assigned while the request waits', async () => {
    const web = pod('web', '127.0.1.30');
    pods.upsert(web);
    const id = identity('id-web', 'c-web');
    state.upsertAssigned(aai(web, id, 'Created'));
    const [ready, timedOut] = [await waits('ready'), await waits('timeout')];
    const pending = call(port, TOKEN, { from: '127.0.1.30' });
    await new Promise((r) => setTimeout(r, 150));
    expect(issued).toEqual([]);
    state.upsertAssigned(aai(web, id, 'Assigned'));
    const reply = await pending;
    expect(reply.status).toBe(200);
    expect(JSON.parse(reply.body).access_token).toBe('token-for-c-web');
    // The wait is counted as ready (the alert on identity waits counts timeouts only).
    expect(await waits('ready')).toBe(ready + 1);
    expect(await waits('timeout')).toBe(timedOut);
  });

  it('answers 404 after the wait when nothing is assigned, or 503 with Retry-After in that mode', async () => {
    pods.upsert(pod('lonely', '127.0.1.31'));
    const timedOut = await waits('timeout');
    const reply = await call(port, TOKEN, { from: '127.0.1.31' });
    expect(reply.status).toBe(404);
    expect(reply.body).toContain('CREATED state failed');
    expect(await waits('timeout')).toBe(timedOut + 1);
    config.setRetryAfterHeader = true;
    try {
      const retry = await call(port, TOKEN, { from: '127.0.1.31' });
      expect(retry.status).toBe(503);
      expect(retry.headers['retry-after']).toBe('20');
    } finally {
      config.setRetryAfterHeader = false;
    }
    expect(issued).toEqual([]);
  });

  it('answers 503 with Retry-After in managed mode too when the flag is set (no binding for the pod), else 404', async () => {
    pods.upsert(pod('unbound', '127.0.1.33'));
    config.operationMode = 'managed';
    config.forceNamespaced = true;
    try {
      expect((await call(port, TOKEN, { from: '127.0.1.33' })).status).toBe(404);
      config.setRetryAfterHeader = true;
      const retry = await call(port, TOKEN, { from: '127.0.1.33' });
      expect(retry.status).toBe(503);
      expect(retry.headers['retry-after']).toBe('20');
    } finally {
      config.setRetryAfterHeader = false;
      config.operationMode = 'standard';
      config.forceNamespaced = false;
    }
    expect(issued).toEqual([]);
  });

  it('maps token failures to 403 (upstream refused) and 503 (unreachable)', async () => {
    const web = pod('web', '127.0.1.32');
    pods.upsert(web);
    state.upsertAssigned(aai(web, identity('id-web', 'c-web'), 'Assigned'));
    tokenFailure = { status: 403, message: 'Identity not found' };
    expect((await call(port, TOKEN, { from: '127.0.1.32' })).status).toBe(403);
    tokenFailure = { status: 503, message: 'connect ECONNREFUSED' };
    expect((await call(port, TOKEN, { from: '127.0.1.32' })).status).toBe(503);
  });

  it('serves an excepted pod the node identity', async () => {
    const job = pod('job', '127.0.1.33', { labels: { app: 'skip' } });
    pods.upsert(job);
    state.upsertException({ ...meta('apps', 'exc'), podLabels: { app: 'skip' } });
    const reply = await call(port, `${TOKEN}&client_id=node-client`, { from: '127.0.1.33' });
    expect(JSON.parse(reply.body).access_token).toBe('node-token-node-client');
    state.removeException('apps', 'exc');
  });

  it('refuses the node path with 503 until AzureIdentities are listed, and an identity one declares with IMDS\'s 400 "Identity not found"', async () => {
    const job = pod('job2', '127.0.1.34', { labels: { app: 'skip' } });
    const unsynced = new NmiIdentityState();
    unsynced.upsertException({ ...meta('apps', 'exc'), podLabels: { app: 'skip' } });
    const index = new PodIndex({ nodeName: NODE, lookupWaitMs: 200 });
    index.upsert(job);
    const logger = pino({ level: 'silent' });
    const other = createNmiServer({ config, pods: index, identities: unsynced, tokens, logger, proxy: createImdsProxy({ imdsEndpoint: 'http://127.0.0.1:9', logger }) });
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    try {
      const otherPort = (other.address() as AddressInfo).port;
      expect((await call(otherPort, `${TOKEN}&client_id=node-client`, { from: '127.0.1.34' })).status).toBe(503);
      unsynced.upsertIdentity(identity('payments', 'declared-client'));
      unsynced.markSynced('identities');
      expect((await call(otherPort, `${TOKEN}&client_id=node-client`, { from: '127.0.1.34' })).status).toBe(200);
      const refused = await call(otherPort, `${TOKEN}&client_id=DECLARED-client`, { from: '127.0.1.34' });
      expect(refused.status).toBe(400);
      expect(refused.headers['content-type']).toBe('application/json; charset=utf-8');
      expect(JSON.parse(refused.body)).toEqual({ error: 'invalid_request', error_description: 'Identity not found' });
      expect(refused.body).not.toContain('payments');
      expect(issued).toEqual(['node:node-client|https://vault.azure.net']);
    } finally {
      await new Promise((r) => other.close(r));
    }
  });

  it('refuses token-path look-alikes with 400 and never proxies them', async () => {
    for (const path of ['/metadata/identity\\oauth2\\token/?resource=x', '/metadata/Identity/oauth2/token?resource=x', '/metadata/identity%5Coauth2%5Ctoken?resource=x']) {
      const reply = await call(port, path, { from: '127.0.1.11' });
      expect(reply.status).toBe(400);
      expect(reply.headers['x-upstream']).toBeUndefined();
    }
  });

  it('proxies other paths to IMDS with the header, and requires the header', async () => {
    const ok = await call(port, '/metadata/instance?api-version=2021-02-01', { from: '127.0.1.11' });
    expect(ok.status).toBe(200);
    expect(ok.headers['x-upstream']).toBe('imds');
    expect(JSON.parse(ok.body)).toEqual({ path: '/metadata/instance?api-version=2021-02-01', metadata: 'true' });
    expect((await call(port, '/doesnotexist', { from: '127.0.1.11' })).status).toBe(404);
    const noHeader = await call(port, '/doesnotexist', { from: '127.0.1.11', headers: {} });
    expect(noHeader.status).toBe(400);
    expect(noHeader.body).toContain('Required metadata header not specified');
  });

  it('refuses a caller’s token requests beyond its in-flight cap with 429, and serves it again once they end', async () => {
    const greedy = pod('greedy', '127.0.1.50');
    pods.upsert(greedy);
    config.maxWaitingRequestsPerPod = 3;
    try {
      const waiting = [1, 2, 3].map(() => call(port, TOKEN, { from: '127.0.1.50' }));
      await new Promise((r) => setTimeout(r, 100));
      const refused = await call(port, TOKEN, { from: '127.0.1.50' });
      expect(refused.status).toBe(429);
      expect(refused.headers['retry-after']).toBe('1');
      const other = pod('other', '127.0.1.51');
      pods.upsert(other);
      state.upsertAssigned(aai(other, identity('id-other', 'c-other'), 'Assigned'));
      expect((await call(port, TOKEN, { from: '127.0.1.51' })).status).toBe(200);
      state.upsertAssigned(aai(greedy, identity('id-greedy', 'c-greedy'), 'Assigned'));
      expect((await Promise.all(waiting)).map((r) => r.status)).toEqual([200, 200, 200]);
      expect((await call(port, TOKEN, { from: '127.0.1.50' })).status).toBe(200);
    } finally {
      config.maxWaitingRequestsPerPod = undefined;
    }
  });

  it('answers Expect: 100-continue token requests directly, and tells only forwarded requests to continue', async () => {
    const { connect } = await import('node:net');
    const raw = (from: string, text: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect({ host: '127.0.0.1', port, localAddress: from }, () => socket.write(text));
        let out = '';
        socket.on('data', (d) => (out += d.toString()));
        socket.on('end', () => resolve(out));
        socket.on('error', reject);
      });
    const web = pod('web', '127.0.1.60');
    pods.upsert(web);
    state.upsertAssigned(aai(web, identity('id-web', 'c-web'), 'Assigned'));
    const token = await raw('127.0.1.60', `GET ${TOKEN} HTTP/1.1\r\nHost: x\r\nMetadata: true\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`);
    expect(token.startsWith('HTTP/1.1 200 OK')).toBe(true);
    expect(token).not.toContain('100 Continue');
    const forwarded = await raw(
      '127.0.1.60',
      'POST /metadata/instance/compute HTTP/1.1\r\nHost: x\r\nMetadata: true\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}',
    );
    expect(forwarded.startsWith('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK')).toBe(true);
    expect(forwarded).toContain('"path":"/metadata/instance/compute"');
  });

  it('serves /host/token only to loopback 127.0.0.1, with the identity wrapped', async () => {
    const web = pod('web', '127.0.1.40');
    pods.upsert(web);
    state.upsertAssigned(aai(web, identity('id-web', 'c-web'), 'Assigned'));
    const ok = await call(port, '/host/token/?resource=https%3A%2F%2Fvault.azure.net', { headers: { podns: 'apps', podname: 'web' } });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toMatchObject({ clientid: 'c-web', token: { access_token: 'token-for-c-web' } });
    const fromPod = await call(port, '/host/token/?resource=r', { from: '127.0.1.40', headers: { podns: 'apps', podname: 'web' } });
    expect(fromPod.status).toBe(500);
    expect((await call(port, '/host/token/?resource=r', { headers: {} })).status).toBe(400);
  });
});
