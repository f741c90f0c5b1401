// ServiceAccounts, the TokenRequest subresource and service-account issuer discovery of the API emulator, through
// three independent clients (client-node, kubectl, Debian's Python client); every token is checked against the JWKS a
// relying party fetches from discovery, as Azure AD does.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/common/clock.js';
import { startTestApiServer, type TestApiServer } from '../helpers/apiserver.js';

const run = promisify(execFile);
const KUBECTL = '/usr/bin/kubectl';
const PYTHON = '/usr/bin/python3';
const PY_SCRIPT = fileURLToPath(new URL('./python-kubernetes/tokenrequest.py', import.meta.url));
const AZURE_AUDIENCE = 'api://AzureADTokenExchange';
const TOKEN = 'tokenrequest-test-token';

interface KubeClaims extends JWTPayload {
  'kubernetes.io': {
    namespace: string;
    serviceaccount: { name: string; uid: string };
    pod?: { name: string; uid: string };
    node?: { name: string; uid?: string };
    secret?: { name: string; uid: string };
  };
}

function apiError(err: unknown): { code: number; body: Record<string, unknown> } {
  if (!(err instanceof k8s.ApiException)) throw err;
  return { code: err.code, body: JSON.parse(String(err.body)) as Record<string, unknown> };
}

async function expectApiError(p: Promise<unknown>): Promise<{ code: number; body: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    return apiError(err);
  }
  throw new Error('expected the call to fail');
}

describe('TokenRequest and service-account issuer discovery', () => {
  let world: TestApiServer;
  let core: k8s.CoreV1Api;
  let agent: Agent;
  let dir: string;
  let kubeconfig: string;
  let jwks: JSONWebKeySet;
  let issuer: string;

  /** What a relying party does: the discovery document, then its jwks_uri, both without credentials. */
  async function discover(): Promise<{ issuer: string; jwks: JSONWebKeySet }> {
    const conf = await undiciFetch(`${world.server.url}/.well-known/openid-configuration`, { dispatcher: agent });
    expect(conf.status).toBe(200);
    const doc = (await conf.json()) as { issuer: string; jwks_uri: string };
    const keys = await undiciFetch(doc.jwks_uri, { dispatcher: agent });
    expect(keys.status).toBe(200);
    return { issuer: doc.issuer, jwks: (await keys.json()) as JSONWebKeySet };
  }

  async function verified(token: string, audience = AZURE_AUDIENCE): Promise<KubeClaims> {
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { issuer, audience, algorithms: ['RS256'] });
    return payload as KubeClaims;
  }

  async function namespaceWithPod(ns: string, sa: string, pod: string, nodeName?: string): Promise<k8s.V1Pod> {
    await core.createNamespace({ body: { metadata: { name: ns } } });
    if (sa !== 'default') await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: sa } } });
    return core.createNamespacedPod({
      namespace: ns,
      body: { metadata: { name: pod }, spec: { serviceAccountName: sa, ...(nodeName ? { nodeName } : {}), containers: [{ name: 'c', image: 'app' }] } },
    });
  }

  function tokenRequest(spec: k8s.AuthenticationV1TokenRequest['spec']): k8s.AuthenticationV1TokenRequest {
    return { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec };
  }

  beforeAll(async () => {
    world = await startTestApiServer({ tls: true, token: TOKEN });
    core = world.kc.makeApiClient(k8s.CoreV1Api);
    agent = new Agent({ connect: { ca: world.server.caPem } });
    dir = await mkdtemp(join(tmpdir(), 'tokenrequest-'));
    kubeconfig = join(dir, 'kubeconfig');
    await world.server.writeKubeconfig(kubeconfig);
    ({ issuer, jwks } = await discover());
  }, 60_000);
  afterAll(async () => {
    await world?.stop();
    await agent?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  describe('ServiceAccounts', () => {
    it('has a default ServiceAccount in every namespace, the initial ones and any created later', async () => {
      for (const ns of ['default', 'kube-system', 'kube-public', 'kube-node-lease']) {
        const sa = await core.readNamespacedServiceAccount({ namespace: ns, name: 'default' });
        expect(sa.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
      }
      await core.createNamespace({ body: { metadata: { name: 'sa-fresh' } } });
      const list = await core.listNamespacedServiceAccount({ namespace: 'sa-fresh' });
      expect(list.items.map((s) => s.metadata?.name)).toEqual(['default']);
    });

    it('makes the default ServiceAccount again when it is deleted, with a new uid, as the serviceaccounts controller does', async () => {
      await core.createNamespace({ body: { metadata: { name: 'sa-recreate' } } });
      const before = await core.readNamespacedServiceAccount({ namespace: 'sa-recreate', name: 'default' });
      await core.deleteNamespacedServiceAccount({ namespace: 'sa-recreate', name: 'default' });
      const after = await core.readNamespacedServiceAccount({ namespace: 'sa-recreate', name: 'default' });
      expect(after.metadata?.uid).not.toBe(before.metadata?.uid);
    });

    it('creates, lists, watches and deletes ServiceAccounts; deleting the namespace takes its default with it', async () => {
      await core.createNamespace({ body: { metadata: { name: 'sa-crud' } } });
      const created = await core.createNamespacedServiceAccount({ namespace: 'sa-crud', body: { metadata: { name: 'web' } } });
      expect(created.kind).toBe('ServiceAccount');
      expect((await expectApiError(core.createNamespacedServiceAccount({ namespace: 'sa-crud', body: { metadata: { name: 'web' } } }))).code).toBe(409);
      const watched: string[] = [];
      const watch = new k8s.Watch(world.kc);
      const req = await watch.watch('/api/v1/namespaces/sa-crud/serviceaccounts', { resourceVersion: created.metadata!.resourceVersion }, (type, obj: k8s.V1ServiceAccount) => {
        watched.push(`${type} ${obj.metadata?.name}`);
      }, () => {});
      await core.deleteNamespacedServiceAccount({ namespace: 'sa-crud', name: 'web' });
      await expect.poll(() => watched).toEqual(['DELETED web']);
      req.abort();
      await core.deleteNamespace({ name: 'sa-crud' });
      await expect.poll(async () => (await expectApiError(core.readNamespace({ name: 'sa-crud' }))).code).toBe(404);
      expect(world.server.requestLog().some((e) => e.method === 'POST' && e.path === '/api/v1/namespaces/sa-crud/serviceaccounts' && e.status === 201)).toBe(true);
    });

    it('runs a pod created without a service account as default (the ServiceAccount admission plugin), and binds default tokens to it', async () => {
      await core.createNamespace({ body: { metadata: { name: 'sa-admission' } } });
      const pod = await core.createNamespacedPod({ namespace: 'sa-admission', body: { metadata: { name: 'plain' }, spec: { containers: [{ name: 'c', image: 'app' }] } } });
      expect(pod.spec?.serviceAccountName).toBe('default');
      expect(pod.spec?.serviceAccount).toBe('default');
      const mirror = await core.createNamespacedPod({ namespace: 'sa-admission', body: { metadata: { name: 'mirror', annotations: { 'kubernetes.io/config.mirror': 'x' } }, spec: { containers: [{ name: 'c', image: 'app' }] } } });
      expect(mirror.spec?.serviceAccountName).toBeUndefined();
      const out = await core.createNamespacedServiceAccountToken({ namespace: 'sa-admission', name: 'default', body: tokenRequest({ audiences: [AZURE_AUDIENCE], boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'plain', uid: pod.metadata!.uid } }) });
      expect((await verified(out.status!.token!))['kubernetes.io'].pod).toEqual({ name: 'plain', uid: pod.metadata!.uid });
    });

    it.skipIf(!existsSync(KUBECTL) && !process.env.CI)('shows `kubectl get serviceaccounts` as the real table: NAME, SECRETS, AGE', async () => {
      const { stdout } = await run(KUBECTL, ['--kubeconfig', kubeconfig, 'get', 'sa', '-n', 'kube-system'], { env: { ...process.env, HOME: dir }, timeout: 60_000 });
      const lines = stdout.trim().split('\n');
      expect(lines[0]!.split(/\s+/)).toEqual(['NAME', 'SECRETS', 'AGE']);
      expect(lines[1]!.split(/\s+/).slice(0, 2)).toEqual(['default', '0']);
    });

    it('lists serviceaccounts/token in /api/v1 discovery as a create-only TokenRequest subresource, and authentication.k8s.io/v1 with tokenreviews', async () => {
      const list = await core.getAPIResources();
      expect(list.resources.find((r) => r.name === 'serviceaccounts/token')).toMatchObject({ group: 'authentication.k8s.io', version: 'v1', kind: 'TokenRequest', verbs: ['create'], namespaced: true });
      const groups = await world.kc.makeApiClient(k8s.ApisApi).getAPIVersions();
      expect(groups.groups.find((g) => g.name === 'authentication.k8s.io')?.preferredVersion?.groupVersion).toBe('authentication.k8s.io/v1');
      const authn = await world.kc.makeApiClient(k8s.AuthenticationV1Api).getAPIResources();
      expect(authn.resources.map((r) => [r.name, r.verbs])).toEqual([['tokenreviews', ['create']]]);
    });
  });

  describe('issuer discovery', () => {
    it('serves the discovery document and the JWKS without credentials, with the real fields, content types and cache headers', async () => {
      const conf = await undiciFetch(`${world.server.url}/.well-known/openid-configuration`, { dispatcher: agent });
      expect(conf.headers.get('content-type')).toBe('application/json');
      expect(conf.headers.get('cache-control')).toBe('public, max-age=3600');
      expect(await conf.json()).toEqual({
        issuer: world.server.url,
        jwks_uri: `${world.server.url}/openid/v1/jwks`,
        response_types_supported: ['id_token'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['RS256'],
      });
      const keys = await undiciFetch(`${world.server.url}/openid/v1/jwks`, { dispatcher: agent });
      expect(keys.headers.get('content-type')).toBe('application/jwk-set+json');
      expect(jwks.keys).toHaveLength(1);
      expect(jwks.keys[0]).toMatchObject({ use: 'sig', kty: 'RSA', alg: 'RS256', kid: await world.server.serviceAccountIssuer.kid() });
      expect(Object.keys(jwks.keys[0]!).sort()).toEqual(['alg', 'e', 'kid', 'kty', 'n', 'use']);
      expect(await world.server.serviceAccountIssuer.jwks()).toEqual(jwks);
      // A relying party's fetch can be made to fail, as an unreachable issuer does.
      world.server.injectFault({ method: 'GET', pathPrefix: '/openid/v1/jwks', status: 503, count: 1 });
      expect((await undiciFetch(`${world.server.url}/openid/v1/jwks`, { dispatcher: agent })).status).toBe(503);
      expect((await undiciFetch(`${world.server.url}/openid/v1/jwks`, { dispatcher: agent })).status).toBe(200);
      // Everything else still needs the bearer token.
      expect((await undiciFetch(`${world.server.url}/api/v1/namespaces`, { dispatcher: agent })).status).toBe(401);
    });

    it('publishes a configured issuer and jwks_uri byte for byte, trailing slash kept, and signs tokens with that iss', async () => {
      const custom = await startTestApiServer({ tls: true, serviceAccountIssuer: 'https://westeurope.oic.example.test/tenant/abc/', serviceAccountJwksUri: 'https://westeurope.oic.example.test/tenant/abc/openid/v1/jwks' });
      try {
        const a = new Agent({ connect: { ca: custom.server.caPem } });
        const doc = (await (await undiciFetch(`${custom.server.url}/.well-known/openid-configuration`, { dispatcher: a })).json()) as Record<string, unknown>;
        await a.close();
        expect(doc.issuer).toBe('https://westeurope.oic.example.test/tenant/abc/');
        expect(doc.jwks_uri).toBe('https://westeurope.oic.example.test/tenant/abc/openid/v1/jwks');
        const out = await custom.kc.makeApiClient(k8s.CoreV1Api).createNamespacedServiceAccountToken({ namespace: 'default', name: 'default', body: tokenRequest({ audiences: [] }) });
        const claims = await custom.server.serviceAccountIssuer.verify(out.status!.token!);
        expect(claims.iss).toBe('https://westeurope.oic.example.test/tenant/abc/');
        // No audiences asked: the API server's own, which default to the issuer.
        expect(claims.aud).toEqual(['https://westeurope.oic.example.test/tenant/abc/']);
      } finally {
        await custom.stop();
      }
    });

    it('rotates the signing key: new tokens carry the new kid, the old key stays published and verifying until dropped', async () => {
      const rotating = await startTestApiServer({ tls: true });
      try {
        const a = new Agent({ connect: { ca: rotating.server.caPem } });
        const fetchJwks = async (): Promise<JSONWebKeySet> => (await (await undiciFetch(`${rotating.server.url}/openid/v1/jwks`, { dispatcher: a })).json()) as JSONWebKeySet;
        const rcore = rotating.kc.makeApiClient(k8s.CoreV1Api);
        const mint = async (): Promise<string> => (await rcore.createNamespacedServiceAccountToken({ namespace: 'default', name: 'default', body: tokenRequest({ audiences: [AZURE_AUDIENCE] }) })).status!.token!;
        const before = await mint();
        const oldKid = decodeProtectedHeader(before).kid;
        await rotating.server.serviceAccountIssuer.rotateSigningKey();
        const after = await mint();
        const newKid = decodeProtectedHeader(after).kid;
        expect(newKid).not.toBe(oldKid);
        expect(await rotating.server.serviceAccountIssuer.kid()).toBe(newKid);
        const both = await fetchJwks();
        expect(both.keys.map((k) => k.kid)).toEqual([newKid, oldKid]);
        for (const t of [before, after]) await jwtVerify(t, createLocalJWKSet(both), { issuer: rotating.server.url, audience: AZURE_AUDIENCE });
        await rotating.server.serviceAccountIssuer.rotateSigningKey({ keepPrevious: false });
        const only = await fetchJwks();
        expect(only.keys).toHaveLength(1);
        await expect(jwtVerify(after, createLocalJWKSet(only), { issuer: rotating.server.url })).rejects.toThrow(/no applicable key/i);
        expect((await rotating.server.serviceAccountIssuer.review(after, [AZURE_AUDIENCE])).authenticated).toBe(false);
        await a.close();
      } finally {
        await rotating.stop();
      }
    });

    it('does not serve discovery for an http issuer, as the real API server installs it only for https', async () => {
      const plain = await startTestApiServer();
      try {
        expect(plain.server.serviceAccountIssuer.servesDiscovery).toBe(false);
        expect((await fetch(`${plain.server.url}/.well-known/openid-configuration`)).status).toBe(404);
        expect((await fetch(`${plain.server.url}/openid/v1/jwks`)).status).toBe(404);
      } finally {
        await plain.stop();
      }
    });
  });

  describe('TokenRequest', () => {
    it('client-node: a pod-bound token for api://AzureADTokenExchange with the real claims, verified against the discovered JWKS', async () => {
      await core.createNode({ body: { metadata: { name: 'tr-node' } } });
      const node = await core.readNode({ name: 'tr-node' });
      const pod = await namespaceWithPod('tr-client-node', 'web', 'web-7d9c', 'tr-node');
      const sa = await core.readNamespacedServiceAccount({ namespace: 'tr-client-node', name: 'web' });
      const out = await core.createNamespacedServiceAccountToken({
        namespace: 'tr-client-node',
        name: 'web',
        body: tokenRequest({ audiences: [AZURE_AUDIENCE], expirationSeconds: 600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'web-7d9c', uid: pod.metadata!.uid } }),
      });
      expect(out.kind).toBe('TokenRequest');
      expect(out.metadata).toMatchObject({ name: 'web', namespace: 'tr-client-node' });
      expect(out.spec).toEqual({ audiences: [AZURE_AUDIENCE], expirationSeconds: 600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'web-7d9c', uid: pod.metadata!.uid } });
      const token = out.status!.token!;
      expect(decodeProtectedHeader(token)).toEqual({ alg: 'RS256', kid: jwks.keys[0]!.kid });
      const claims = await verified(token);
      expect(claims.sub).toBe('system:serviceaccount:tr-client-node:web');
      expect(claims.aud).toEqual([AZURE_AUDIENCE]);
      expect(claims.iat).toBe(claims.nbf);
      expect(claims.exp! - claims.iat!).toBe(600);
      expect(claims.jti).toMatch(/^[0-9a-f-]{36}$/);
      expect(claims['kubernetes.io']).toEqual({
        namespace: 'tr-client-node',
        serviceaccount: { name: 'web', uid: sa.metadata!.uid },
        pod: { name: 'web-7d9c', uid: pod.metadata!.uid },
        node: { name: 'tr-node', uid: node.metadata!.uid },
      });
      expect(out.status!.expirationTimestamp!.getTime()).toBe(claims.exp! * 1000);
      expect(await world.server.serviceAccountIssuer.review(token, [AZURE_AUDIENCE])).toMatchObject({ authenticated: true, username: 'system:serviceaccount:tr-client-node:web' });
      const review = await world.kc.makeApiClient(k8s.AuthenticationV1Api).createTokenReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [AZURE_AUDIENCE] } } });
      expect(review.status).toEqual({
        authenticated: true,
        audiences: [AZURE_AUDIENCE],
        user: {
          username: 'system:serviceaccount:tr-client-node:web',
          uid: sa.metadata!.uid,
          groups: ['system:serviceaccounts', 'system:serviceaccounts:tr-client-node', 'system:authenticated'],
          extra: {
            'authentication.kubernetes.io/credential-id': [`JTI=${claims.jti}`],
            'authentication.kubernetes.io/node-name': ['tr-node'],
            'authentication.kubernetes.io/node-uid': [node.metadata!.uid],
            'authentication.kubernetes.io/pod-name': ['web-7d9c'],
            'authentication.kubernetes.io/pod-uid': [pod.metadata!.uid],
          },
        },
      });
    });

    it('answers 201, defaults expirationSeconds to 3600 and audiences to the issuer, and stamps iat/exp from the injected clock', async () => {
      const clock = new ManualClock(Date.UTC(2026, 0, 1, 12, 0, 0));
      const timed = await startTestApiServer({ clock });
      try {
        const res = await fetch(`${timed.server.url}/api/v1/namespaces/default/serviceaccounts/default/token`, {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: {} }),
        });
        expect(res.status).toBe(201);
        const body = (await res.json()) as { spec: Record<string, unknown>; status: { token: string; expirationTimestamp: string } };
        expect(body.spec).toEqual({ audiences: [timed.server.url], expirationSeconds: 3600 });
        expect(body.status.expirationTimestamp).toBe('2026-01-01T13:00:00Z');
        const claims = await timed.server.serviceAccountIssuer.verify(body.status.token, timed.server.url);
        expect(claims.iat).toBe(Date.UTC(2026, 0, 1, 12, 0, 0) / 1000);
        expect(claims['kubernetes.io'].pod).toBeUndefined();
        await clock.advance(3601_000);
        await expect(timed.server.serviceAccountIssuer.verify(body.status.token)).rejects.toThrow(/exp/);
      } finally {
        await timed.stop();
      }
    });

    it.skipIf(!existsSync(KUBECTL) && !process.env.CI)('kubectl create token --audience --duration 10m --bound-object-kind Pod prints a token the JWKS verifies', async () => {
      const pod = await namespaceWithPod('tr-kubectl', 'app', 'app-0');
      const { stdout } = await run(KUBECTL, [
        '--kubeconfig', kubeconfig, 'create', 'token', 'app', '-n', 'tr-kubectl', '--audience', AZURE_AUDIENCE, '--duration', '10m',
        '--bound-object-kind', 'Pod', '--bound-object-name', 'app-0', '--bound-object-uid', pod.metadata!.uid!,
      ], { env: { ...process.env, HOME: dir }, timeout: 60_000 });
      const claims = await verified(stdout.trim());
      expect(claims.sub).toBe('system:serviceaccount:tr-kubectl:app');
      expect(claims.exp! - claims.iat!).toBe(600);
      expect(claims['kubernetes.io'].pod).toEqual({ name: 'app-0', uid: pod.metadata!.uid });
    });

    it.skipIf(!existsSync(PYTHON) && !process.env.CI)('Python client: create_namespaced_service_account_token, and its 422 and 409 refusals', async () => {
      const pod = await namespaceWithPod('tr-python', 'py', 'py-0');
      let stdout: string;
      try {
        ({ stdout } = await run(PYTHON, [PY_SCRIPT, kubeconfig, JSON.stringify({ namespace: 'tr-python', serviceAccount: 'py', pod: 'py-0', podUid: pod.metadata!.uid, audience: AZURE_AUDIENCE })], {
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir }, timeout: 90_000,
        }));
      } catch (err) {
        const e = err as { stderr?: string };
        throw new Error(`tokenrequest.py failed:\n${e.stderr ?? ''}`, { cause: err });
      }
      const out = JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
      const claims = await verified(out.token as string);
      expect(claims.sub).toBe('system:serviceaccount:tr-python:py');
      expect(out.expirationTimestamp).toBe(new Date(claims.exp! * 1000).toISOString().replace('.000Z', 'Z'));
      expect(out.audiences).toEqual([AZURE_AUDIENCE]);
      expect(out.shortStatus).toBe(422);
      expect(out.shortMessage).toBe('TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes');
      expect(out.wrongUidStatus).toBe(409);
    });

    it('shortens a request above --service-account-max-token-expiration with the real warning', async () => {
      const capped = await startTestApiServer({ serviceAccountMaxTokenExpirationSeconds: 1800 });
      try {
        const res = await fetch(`${capped.server.url}/api/v1/namespaces/default/serviceaccounts/default/token`, {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ spec: { audiences: ['a'], expirationSeconds: 7200 } }),
        });
        expect(res.status).toBe(201);
        expect(res.headers.get('warning')).toBe('299 - "requested expiration of 7200 seconds shortened to 1800 seconds"');
        const body = (await res.json()) as { spec: { expirationSeconds: number }; status: { token: string } };
        expect(body.spec.expirationSeconds).toBe(1800);
        const claims = await capped.server.serviceAccountIssuer.verify(body.status.token, 'a');
        expect(claims.exp - claims.iat).toBe(1800);
      } finally {
        await capped.stop();
      }
    });

    it('binds to a Secret and to a Node with their uids in the claim, and the token stops reviewing when that object goes', async () => {
      const secret = await core.createNamespacedSecret({ namespace: 'default', body: { metadata: { name: 'bound-secret' } } });
      const s = await core.createNamespacedServiceAccountToken({ namespace: 'default', name: 'default', body: tokenRequest({ audiences: [AZURE_AUDIENCE], boundObjectRef: { apiVersion: 'v1', kind: 'Secret', name: 'bound-secret' } }) });
      expect((await verified(s.status!.token!))['kubernetes.io'].secret).toEqual({ name: 'bound-secret', uid: secret.metadata!.uid });
      const node = await core.createNode({ body: { metadata: { name: 'bound-node' } } });
      const n = await core.createNamespacedServiceAccountToken({ namespace: 'default', name: 'default', body: tokenRequest({ audiences: [AZURE_AUDIENCE], boundObjectRef: { apiVersion: 'v1', kind: 'Node', name: 'bound-node' } }) });
      expect((await verified(n.status!.token!))['kubernetes.io'].node).toEqual({ name: 'bound-node', uid: node.metadata!.uid });
      expect((await world.server.serviceAccountIssuer.review(n.status!.token!, [AZURE_AUDIENCE])).authenticated).toBe(true);
      await core.deleteNode({ name: 'bound-node' });
      expect(await world.server.serviceAccountIssuer.review(n.status!.token!, [AZURE_AUDIENCE])).toMatchObject({ authenticated: false, detail: 'Node bound-node has been deleted' });
      await core.deleteNamespacedSecret({ namespace: 'default', name: 'bound-secret' });
      expect(await world.server.serviceAccountIssuer.review(s.status!.token!, [AZURE_AUDIENCE])).toMatchObject({ authenticated: false, detail: 'Secret default/bound-secret has been deleted' });
    });

    it('names a pod-bound token\'s node without a uid when the pod\'s Node object does not exist', async () => {
      await namespaceWithPod('tr-nodeless', 'default', 'p', 'no-such-node');
      const out = await core.createNamespacedServiceAccountToken({ namespace: 'tr-nodeless', name: 'default', body: tokenRequest({ audiences: [AZURE_AUDIENCE], boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'p' } }) });
      expect((await verified(out.status!.token!))['kubernetes.io'].node).toEqual({ name: 'no-such-node' });
    });
  });

  describe('refusals (attack rows)', () => {
    let podUid: string;
    beforeAll(async () => {
      podUid = (await namespaceWithPod('tr-attack', 'alice', 'alice-0')).metadata!.uid!;
      await core.createNamespacedServiceAccount({ namespace: 'tr-attack', body: { metadata: { name: 'bob' } } });
      await core.createNamespacedPod({ namespace: 'tr-attack', body: { metadata: { name: 'bob-0' }, spec: { serviceAccountName: 'bob', containers: [{ name: 'c', image: 'app' }] } } });
    });
    const ask = (sa: string, spec: k8s.AuthenticationV1TokenRequest['spec'], body: Partial<k8s.AuthenticationV1TokenRequest> = {}) =>
      core.createNamespacedServiceAccountToken({ namespace: 'tr-attack', name: sa, body: { ...tokenRequest(spec), ...body } });

    it('refuses a token bound to a pod uid that does not match the live pod (409, the real wording)', async () => {
      const e = await expectApiError(ask('alice', { audiences: [AZURE_AUDIENCE], boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'alice-0', uid: '11111111-1111-1111-1111-111111111111' } }));
      expect(e.code).toBe(409);
      expect(e.body).toMatchObject({
        reason: 'Conflict',
        message: 'Operation cannot be fulfilled on Pod "alice-0": the UID in the bound object reference (11111111-1111-1111-1111-111111111111) does not match the UID in record. The object might have been deleted and then recreated',
        details: { name: 'alice-0', kind: 'Pod' },
      });
    });

    it('refuses expirationSeconds 599 with 422 Invalid, as the real validation words it', async () => {
      const e = await expectApiError(ask('alice', { audiences: [AZURE_AUDIENCE], expirationSeconds: 599 }));
      expect(e.code).toBe(422);
      expect(e.body).toMatchObject({
        reason: 'Invalid',
        message: 'TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes',
        details: { group: 'authentication.k8s.io', kind: 'TokenRequest', causes: [{ reason: 'FieldValueInvalid', field: 'spec.expirationSeconds' }] },
      });
      const big = await expectApiError(ask('alice', { audiences: [AZURE_AUDIENCE], expirationSeconds: 2 ** 32 + 1 }));
      expect(big.body.message).toBe(`TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: ${2 ** 32 + 1}: may not specify a duration larger than 2^32 seconds`);
    });

    it("refuses a token for SA alice bound to bob's pod (400), and a token for alice never names bob", async () => {
      const e = await expectApiError(ask('alice', { audiences: [AZURE_AUDIENCE], boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'bob-0' } }));
      expect(e.code).toBe(400);
      expect(e.body.message).toBe('cannot bind token for serviceaccount "alice" to pod running with different serviceaccount name.');
      const alice = await ask('alice', { audiences: [AZURE_AUDIENCE], boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'alice-0', uid: podUid } });
      const claims = await verified(alice.status!.token!);
      expect(claims.sub).toBe('system:serviceaccount:tr-attack:alice');
      expect(claims['kubernetes.io'].serviceaccount.name).toBe('alice');
      // Rewriting the payload to claim bob breaks the signature.
      const [h, p, s] = alice.status!.token!.split('.') as [string, string, string];
      const forged = JSON.parse(Buffer.from(p, 'base64url').toString()) as KubeClaims;
      forged.sub = 'system:serviceaccount:tr-attack:bob';
      forged['kubernetes.io'].serviceaccount.name = 'bob';
      const forgedToken = `${h}.${Buffer.from(JSON.stringify(forged)).toString('base64url')}.${s}`;
      await expect(verified(forgedToken)).rejects.toThrow(/signature/);
      expect((await world.server.serviceAccountIssuer.review(forgedToken, [AZURE_AUDIENCE])).authenticated).toBe(false);
      // The body cannot rename the service account either.
      const renamed = await expectApiError(ask('alice', { audiences: [AZURE_AUDIENCE] }, { metadata: { name: 'bob' } }));
      expect(renamed.code).toBe(422);
      expect(renamed.body.message).toBe('TokenRequest.authentication.k8s.io "alice" is invalid: metadata.name: Invalid value: "bob": must match the service account name if specified');
      const otherNs = await expectApiError(ask('alice', { audiences: [AZURE_AUDIENCE] }, { metadata: { namespace: 'default' } }));
      expect(otherNs.body.message).toBe('TokenRequest.authentication.k8s.io "alice" is invalid: metadata.namespace: Invalid value: "default": must match the service account namespace if specified');
    });

    it('answers 404 for a missing service account and a missing bound pod, 400 for an unsupported kind', async () => {
      const sa = await expectApiError(ask('nobody', { audiences: [AZURE_AUDIENCE] }));
      expect(sa.code).toBe(404);
      expect(sa.body).toMatchObject({ reason: 'NotFound', message: 'serviceaccounts "nobody" not found', details: { name: 'nobody', kind: 'serviceaccounts' } });
      const pod = await expectApiError(ask('alice', { audiences: [AZURE_AUDIENCE], boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'ghost' } }));
      expect(pod.code).toBe(404);
      expect(pod.body.message).toBe('pods "ghost" not found');
      const kind = await expectApiError(ask('alice', { audiences: [AZURE_AUDIENCE], boundObjectRef: { apiVersion: 'v1', kind: 'ConfigMap', name: 'x' } }));
      expect(kind.code).toBe(400);
      expect(kind.body.message).toBe('cannot bind token to object of type /v1, Kind=ConfigMap');
      const unnamed = await expectApiError(ask('alice', { audiences: [AZURE_AUDIENCE], boundObjectRef: { apiVersion: 'v1', kind: 'Pod' } }));
      expect([unnamed.code, unnamed.body.message]).toEqual([400, 'Name parameter required.']);
      const apps = await expectApiError(ask('alice', { audiences: [AZURE_AUDIENCE], boundObjectRef: { apiVersion: 'apps/v1', kind: 'Pod', name: 'alice-0' } }));
      expect(apps.body.message).toBe('cannot bind token to object of type apps/v1, Kind=Pod');
    });

    it('answers malformed TokenRequests with a 4xx Status, never a 500 and never a token', async () => {
      const bodies: [string, string][] = [
        ['null', 'application/json'], ['[]', 'application/json'], ['"x"', 'application/json'], ['{', 'application/json'],
        ['{"spec":{"audiences":"api://AzureADTokenExchange"}}', 'application/json'], ['{"spec":{"audiences":[1]}}', 'application/json'],
        ['{"spec":{"expirationSeconds":"600"}}', 'application/json'], ['{"spec":{"expirationSeconds":600.5}}', 'application/json'],
        ['{"spec":{"expirationSeconds":-1}}', 'application/json'], ['{"kind":"Pod","spec":{}}', 'application/json'],
        ['{"apiVersion":"v1","spec":{}}', 'application/json'], ['{"spec":{"boundObjectRef":{"kind":7,"name":["x"]}}}', 'application/json'],
        ['{"spec":{"boundObjectRef":"Pod"}, "metadata": 3}', 'application/json'], ['k8s\u0000\u00ff', 'application/vnd.kubernetes.protobuf'],
        ['', 'application/json'],
      ];
      for (const [body, contentType] of bodies) {
        const res = await undiciFetch(`${world.server.url}/api/v1/namespaces/tr-attack/serviceaccounts/alice/token`, {
          dispatcher: agent, method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': contentType }, body,
        });
        const text = await res.text();
        expect(res.status, body).toBeGreaterThanOrEqual(400);
        expect(res.status, body).toBeLessThan(500);
        expect(JSON.parse(text)).toMatchObject({ kind: 'Status', status: 'Failure' });
      }
    });

    it('refuses GET on the token subresource and requests without the bearer token', async () => {
      const res = await undiciFetch(`${world.server.url}/api/v1/namespaces/tr-attack/serviceaccounts/alice/token`, { dispatcher: agent, headers: { authorization: `Bearer ${TOKEN}` } });
      expect(res.status).toBe(405);
      const anon = await undiciFetch(`${world.server.url}/api/v1/namespaces/tr-attack/serviceaccounts/alice/token`, { dispatcher: agent, method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"spec":{}}' });
      expect(anon.status).toBe(401);
    });

    it('stops reviewing a pod-bound token once the pod is gone (and a recreated pod of the same name does not revive it), while its signature still verifies offline', async () => {
      const pod = await core.createNamespacedPod({ namespace: 'tr-attack', body: { metadata: { name: 'short-lived' }, spec: { serviceAccountName: 'alice', containers: [{ name: 'c', image: 'app' }] } } });
      const out = await ask('alice', { audiences: [AZURE_AUDIENCE], boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'short-lived', uid: pod.metadata!.uid } });
      const token = out.status!.token!;
      expect((await world.server.serviceAccountIssuer.review(token, [AZURE_AUDIENCE])).authenticated).toBe(true);
      expect((await world.server.serviceAccountIssuer.review(token, ['https://other.example'])).authenticated).toBe(false);
      await core.deleteNamespacedPod({ namespace: 'tr-attack', name: 'short-lived' });
      const gone = await world.server.serviceAccountIssuer.review(token, [AZURE_AUDIENCE]);
      expect(gone).toMatchObject({ authenticated: false, error: 'invalid bearer token, service account token has been invalidated', detail: 'Pod tr-attack/short-lived has been deleted' });
      await core.createNamespacedPod({ namespace: 'tr-attack', body: { metadata: { name: 'short-lived' }, spec: { serviceAccountName: 'alice', containers: [{ name: 'c', image: 'app' }] } } });
      const recreated = await world.server.serviceAccountIssuer.review(token, [AZURE_AUDIENCE]);
      expect(recreated.authenticated).toBe(false);
      expect(recreated.detail).toMatch(/^Pod UID \(.+\) does not match claim/);
      // The same verdict through the API: TokenReview.
      const authn = world.kc.makeApiClient(k8s.AuthenticationV1Api);
      const review = await authn.createTokenReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [AZURE_AUDIENCE] } } });
      expect(review.status).toEqual({ user: {}, error: 'invalid bearer token, service account token has been invalidated' });
      // Azure AD validates offline: the signature and times still hold (binding is not revocation there).
      expect((await verified(token)).sub).toBe('system:serviceaccount:tr-attack:alice');
    });
  });
});
