// Federated mode end to end on the netns sandbox (issue 13 "Show"): pods in their own network namespaces run
// unmodified IMDS clients (@azure/identity's ManagedIdentityCredential, and Debian's Python azure.identity) against
// 169.254.169.254; real iptables send them to NMI, which exchanges a token of the pod's own service account
// (TokenRequest bound to the pod) at the emulator's Azure AD through the federated identity credential MIC wrote.
// No identity is attached to any VM or VMSS, and no VM/VMSS is PATCHed for a federated identity.
//
// One sandbox (federation on for MIC and NMI) is shared by the file; every test works in its own namespace with its
// own identities, and afterEach removes its pods and custom resources.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { shouldSkipNetns } from '../helpers/netns.js';
import { eventually, hostNetworkState, REPO_ROOT, startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';

const skip = shouldSkipNetns('federated mode (netns sandbox)');
const SUBJECT = (ns: string, sa: string) => `system:serviceaccount:${ns}:${sa}`;
/** Debian's Python Azure SDK (python3-azure; .ci/run installs it, so CI never skips its rows: they fail without it). */
const PYTHON_AZURE = existsSync('/usr/lib/python3/dist-packages/azure/identity/__init__.py') || Boolean(process.env.CI);
if (!PYTHON_AZURE) console.warn("[skipped] federated e2e with Debian's Python azure.identity: apt-get install -y --no-install-recommends python3-azure; CI runs it");

describe.skipIf(skip)('federated mode on the netns sandbox', () => {
  let t: TestSandbox;
  let before: Awaited<ReturnType<typeof hostNetworkState>>;
  let ns = '';
  let counter = 0;

  beforeAll(async () => {
    before = await hostNetworkState();
    t = await startTestSandbox({ network: 'netns', nodes: 2, federation: true });
    t.sandbox.azure.clearRequestLog();
  }, 120_000);

  afterAll(async () => {
    const name = t?.sandbox.network.name;
    await t?.stop();
    if (name) expect(await hostNetworkState(name)).toEqual({ namespaces: [], natRules: [], links: [] });
    expect((await hostNetworkState()).natRules).toEqual(before.natRules);
  }, 120_000);

  afterEach(async () => {
    if (!t || ns === '') return;
    const pods = await t.core.listNamespacedPod({ namespace: ns });
    await Promise.all((pods.items ?? []).map((p) => t.deletePod(ns, p.metadata?.name ?? '').catch(() => undefined)));
    await eventually(async () => (await Promise.all((pods.items ?? []).map((p) => t.assignedFor(ns, p.metadata?.name ?? '')))).every((a) => a.length === 0), 30_000, 'AAIs of the test pods gone').catch(() => undefined);
    for (const plural of ['azureidentitybindings', 'azureidentities']) {
      for (const o of await t.listCustom(ns, plural)) await t.deleteCustom(ns, plural, String((o.metadata as { name?: string }).name)).catch(() => undefined);
    }
    ns = '';
  }, 60_000);

  /** A fresh namespace with the given service accounts, and a fresh user-assigned identity for each name given. */
  const setup = async (serviceAccounts: readonly string[], ...identityNames: string[]) => {
    ns = `fed-${++counter}`;
    await t.createNamespace(ns);
    for (const sa of serviceAccounts) await t.createServiceAccount(ns, sa);
    return identityNames.map((n) => t.sandbox.createIdentity(`${ns}-${n}-${randomUUID().slice(0, 6)}`));
  };
  const spec = (id: { id: string; clientId: string }, mode: 'Federated' | 'Attached' = 'Federated') => ({ type: 0, resourceID: id.id, clientID: id.clientId, mode });
  const states = async (pod: string, namespace = ns) => (await t.assignedFor(namespace, pod)).map((a) => (a.status as { status?: string } | undefined)?.status ?? '');
  const assigned = (pod: string, namespace = ns) =>
    eventually(async () => {
      const s = await states(pod, namespace);
      return s.length === 1 && s[0] === 'Assigned' ? s : undefined;
    }, 30_000, `Assigned AAI for ${namespace}/${pod}`);
  const subjects = (id: { id: string }) => t.sandbox.azure.listFederatedCredentials(id.id).map((f) => f.subject).sort();
  const vmPatches = () => t.sandbox.azure.requestLog().filter((e) => e.operation === 'vm_patch' || e.operation === 'vmss_patch');
  const onAnyVm = (id: { id: string }) => [0, 1].some((i) => t.computeIdentities(i).includes(id.id.toLowerCase()));
  /** A token for the pod, retried while the new credential propagates (NMI answers 503 then, and says so). */
  const tokenOf = (pod: string, opts: Parameters<TestSandbox['podToken']>[2] = {}) =>
    eventually(async () => {
      const r = await t.podToken(ns, pod, { timeoutMs: 20_000, ...opts });
      return r.ok ? r : undefined;
    }, 60_000, `a federated token in ${ns}/${pod}`);
  const expectIdentity = (claims: { appid?: string; oid?: string; xms_mirid?: string } | undefined, id: { id: string; clientId: string; principalId: string }) => {
    expect(claims).toMatchObject({ appid: id.clientId, oid: id.principalId });
    expect(claims?.xms_mirid?.toLowerCase()).toBe(id.id.toLowerCase());
  };

  it("gives an unmodified @azure/identity client its own identity's token (appid, oid, xms_mirid), by default, client id and resource id, with no VM identity and no PATCH", async () => {
    const [web, other] = await setup(['web', 'other'], 'web', 'other');
    await t.createIdentity(ns, 'web', spec(web!));
    await t.createBinding(ns, 'web-binding', 'web', 'web');
    await t.createIdentity(ns, 'other', spec(other!));
    await t.createBinding(ns, 'other-binding', 'other', 'other');
    await t.startPod(ns, 'app', 'web', { serviceAccountName: 'web' });
    await t.startPod(ns, 'peer', 'other', { serviceAccountName: 'other' });
    await assigned('app');
    await assigned('peer');
    expectIdentity((await tokenOf('app')).claims, web!);
    expectIdentity((await tokenOf('peer')).claims, other!);
    expectIdentity((await t.podToken(ns, 'app', { clientId: web!.clientId })).claims, web!);
    expectIdentity((await t.podToken(ns, 'app', { resourceId: web!.id })).claims, web!);
    expect(subjects(web!)).toEqual([SUBJECT(ns, 'web')]);
    expect(subjects(other!)).toEqual([SUBJECT(ns, 'other')]);
    const [fic] = t.sandbox.azure.listFederatedCredentials(web!.id);
    expect(fic).toMatchObject({ issuer: t.sandbox.endpoints.serviceAccountIssuer.issuer, audiences: ['api://AzureADTokenExchange'] });
    expect(onAnyVm(web!) || onAnyVm(other!)).toBe(false);
    // Through Azure AD, never through the node's IMDS.
    const log = t.sandbox.azure.requestLog();
    expect(log.filter((e) => e.operation === 'imds_token')).toEqual([]);
    expect(log.some((e) => e.operation === 'aad_token' && e.status === 200)).toBe(true);
    expect(vmPatches()).toEqual([]);
  }, 120_000);

  it.skipIf(!PYTHON_AZURE)("gives Debian's Python azure.identity ManagedIdentityCredential, unmodified, its own identity's token", async () => {
    const [id] = await setup(['py'], 'py');
    await t.createIdentity(ns, 'py', spec(id!));
    await t.createBinding(ns, 'py-binding', 'py', 'py');
    await t.startPod(ns, 'py-app', 'py', { serviceAccountName: 'py' });
    await assigned('py-app');
    const token = await tokenOf('py-app', { client: 'python' });
    expectIdentity(token.claims, id!);
    expectIdentity((await t.podToken(ns, 'py-app', { client: 'python', clientId: id!.clientId })).claims, id!);
    expectIdentity((await t.podToken(ns, 'py-app', { client: 'python', resourceId: id!.id })).claims, id!);
    expect(onAnyVm(id!)).toBe(false);
    expect(vmPatches()).toEqual([]);
  }, 120_000);

  it('gives two service accounts of one namespace bound to one identity two credentials, and removes one when the last pod of its service account goes', async () => {
    const [id] = await setup(['web', 'worker'], 'shared');
    await t.createIdentity(ns, 'shared', spec(id!));
    await t.createBinding(ns, 'shared-binding', 'shared', 'app');
    const [node0, node1] = t.sandbox.endpoints.nodes;
    await t.startPod(ns, 'web-0', 'app', { serviceAccountName: 'web', nodeName: node0!.name });
    await t.startPod(ns, 'worker-0', 'app', { serviceAccountName: 'worker', nodeName: node0!.name });
    await t.startPod(ns, 'worker-1', 'app', { serviceAccountName: 'worker', nodeName: node1!.name });
    for (const p of ['web-0', 'worker-0', 'worker-1']) await assigned(p);
    await eventually(() => subjects(id!).length === 2, 30_000, 'two credentials');
    expect(subjects(id!)).toEqual([SUBJECT(ns, 'web'), SUBJECT(ns, 'worker')]);
    for (const p of ['web-0', 'worker-0', 'worker-1']) expectIdentity((await tokenOf(p)).claims, id!);

    // One worker left: its credential stays and serves it; the last one gone: it goes, web's stays.
    await t.deletePod(ns, 'worker-0');
    await eventually(async () => (await t.assignedFor(ns, 'worker-0')).length === 0, 30_000, 'worker-0 AAI gone');
    expect(subjects(id!)).toEqual([SUBJECT(ns, 'web'), SUBJECT(ns, 'worker')]);
    expectIdentity((await t.podToken(ns, 'worker-1')).claims, id!);
    await t.deletePod(ns, 'worker-1');
    await eventually(() => subjects(id!).length === 1, 30_000, "worker's credential removed");
    expect(subjects(id!)).toEqual([SUBJECT(ns, 'web')]);
    expectIdentity((await t.podToken(ns, 'web-0')).claims, id!);
    expect(onAnyVm(id!)).toBe(false);
    expect(vmPatches()).toEqual([]);
  }, 120_000);

  it('refuses the 21st service account of one identity with a FederatedCredentialLimit event and explain output, and gives its pod no token', async () => {
    const sas = Array.from({ length: 21 }, (_, i) => `sa-${String(i).padStart(2, '0')}`);
    const [id] = await setup(sas, 'limit');
    await t.createIdentity(ns, 'limit', spec(id!));
    await t.createBinding(ns, 'limit-binding', 'limit', 'limit');
    // The first 20 one by one (each gets its credential), then the 21st.
    for (const sa of sas.slice(0, 20)) await t.startPod(ns, `${sa}-pod`, 'limit', { serviceAccountName: sa });
    await eventually(async () => (await Promise.all(sas.slice(0, 20).map((sa) => states(`${sa}-pod`)))).every((s) => s[0] === 'Assigned'), 60_000, '20 Assigned AAIs');
    expect(subjects(id!)).toHaveLength(20);
    const last = sas[20]!;
    await t.startPod(ns, `${last}-pod`, 'limit', { serviceAccountName: last });
    const events = await eventually(async () => {
      const list = (await t.core.listNamespacedEvent({ namespace: ns })).items.filter((e) => e.reason === 'FederatedCredentialLimit');
      return list.some((e) => e.involvedObject.kind === 'Pod' && e.involvedObject.name === `${last}-pod`) && list.some((e) => e.involvedObject.kind === 'AzureIdentity' && e.involvedObject.name === 'limit') ? list : undefined;
    }, 30_000, 'FederatedCredentialLimit events on the pod and the identity');
    for (const e of events) {
      expect(e.type).toBe('Warning');
      expect(e.message).toContain(`${ns}/limit`);
      expect(e.message).toContain('20 federated identity credentials');
    }
    // Its AAI exists but is never Assigned (MIC leaves it Created; the status may not be written yet).
    expect((await states(`${last}-pod`)).filter((x) => x === 'Assigned')).toEqual([]);
    expect(await t.assignedFor(ns, `${last}-pod`)).toHaveLength(1);
    expect(subjects(id!)).toHaveLength(20);
    expect(subjects(id!)).not.toContain(SUBJECT(ns, last));

    const explained = await explainCli(t, ['--enable-federated-identities', `${ns}/${last}-pod`]);
    expect(explained.code).not.toBe(0);
    expect(explained.stdout).toMatch(/waiting: FederatedCredentialLimit: .*20 federated identity credentials/);
    expect((await explainCli(t, ['--enable-federated-identities', `${ns}/${sas[0]}-pod`])).stdout).not.toContain('FederatedCredentialLimit');

    const refused = await t.podToken(ns, `${last}-pod`, { maxRetries: 0 });
    expect(refused.ok).toBe(false);
    expect(refused.claims).toBeUndefined();
    expectIdentity((await t.podToken(ns, `${sas[0]}-pod`)).claims, id!);
    expect(vmPatches()).toEqual([]);
  }, 180_000);

  it('answers a pod whose credential was deleted with an IMDS-shaped error within a bound, never a hang', async () => {
    const [id] = await setup(['gone'], 'gone');
    await t.createIdentity(ns, 'gone', spec(id!));
    await t.createBinding(ns, 'gone-binding', 'gone', 'gone');
    await t.startPod(ns, 'app', 'gone', { serviceAccountName: 'gone' });
    await assigned('app');
    await eventually(() => subjects(id!).length === 1, 30_000, 'the credential');
    const [fic] = t.sandbox.azure.listFederatedCredentials(id!.id);
    // Deleted behind MIC's back before the pod ever asked (nothing cached): Azure AD has no matching record. MIC's
    // periodic Azure check writes it again (level-triggered); a propagation delay as real Azure AD has keeps Azure AD
    // refusing it for this test's length whenever that check happens to run.
    t.sandbox.azure.setFederationPropagation(10 * 60_000);
    onTestFinished(() => t.sandbox.azure.setFederationPropagation(0));
    expect(t.sandbox.azure.deleteFederatedCredential(id!.id, fic!.name)).toBe(true);
    // On the wire, as any IMDS client sees it: the status and text attachment mode gives for a failed token.
    const started = Date.now();
    const raw = await t.sandbox.execInPod(`${ns}/app`, ['node', '-e', IMDS_PROBE], { timeoutMs: 40_000 });
    const tookMs = Date.now() - started;
    const answer = JSON.parse(raw.stdout.trim().split('\n').pop() ?? '{}') as { status?: number; contentType?: string; body?: string };
    expect(answer.status, raw.stdout + raw.stderr).toBe(503);
    expect(answer.contentType).toBe('text/plain; charset=utf-8');
    expect(answer.body).toContain('retry shortly');
    expect(answer.body).not.toMatch(/AADSTS|federated identity record/);
    // NMI's in-call wait for propagation is 10 s; the rest is the pod's process starting.
    expect(tookMs).toBeLessThan(25_000);
    // The unmodified SDKs give up with an error of their own (the Node SDK calls a 5xx after retries a network
    // error), never hang until their caller's timeout.
    const node = await t.podToken(ns, 'app', { maxRetries: 0, timeoutMs: 40_000 });
    expect(node.ok, JSON.stringify(node)).toBe(false);
    expect(node.error, JSON.stringify(node)).toBe('CredentialUnavailableError');
    if (PYTHON_AZURE) {
      const py = await t.podToken(ns, 'app', { client: 'python', maxRetries: 0, timeoutMs: 40_000 });
      expect(py.ok, JSON.stringify(py)).toBe(false);
      expect(py.error, JSON.stringify(py)).not.toBe('Timeout');
      expect(py.status, JSON.stringify(py)).toBe(503);
    }
  }, 120_000);

  it("never gives a pod another service account's identity, nor an unbound pod of the same service account its identity", async () => {
    const [web, worker] = await setup(['web', 'worker'], 'web', 'worker');
    await t.createIdentity(ns, 'web', spec(web!));
    await t.createBinding(ns, 'web-binding', 'web', 'web');
    await t.createIdentity(ns, 'worker', spec(worker!));
    await t.createBinding(ns, 'worker-binding', 'worker', 'worker');
    const node = t.sandbox.endpoints.nodes[0]!.name;
    await t.startPod(ns, 'web-app', 'web', { serviceAccountName: 'web', nodeName: node });
    await t.startPod(ns, 'worker-app', 'worker', { serviceAccountName: 'worker', nodeName: node });
    // Runs as `web` (Azure AD would accept its service-account token for web's identity) but carries no binding label.
    await t.startPod(ns, 'stowaway', undefined, { serviceAccountName: 'web', nodeName: node });
    await assigned('web-app');
    await assigned('worker-app');
    // Both identities' tokens are in NMI's cache now.
    expectIdentity((await tokenOf('web-app')).claims, web!);
    expectIdentity((await tokenOf('worker-app')).claims, worker!);

    const refusedFor = async (pod: string, ask: { clientId?: string; resourceId?: string }) => {
      const r = await t.podToken(ns, pod, { ...ask, maxRetries: 0 });
      expect(r.ok, `${pod} ${JSON.stringify(ask)}: ${JSON.stringify(r)}`).toBe(false);
      expect(r.claims).toBeUndefined();
    };
    await refusedFor('web-app', { clientId: worker!.clientId });
    await refusedFor('web-app', { resourceId: worker!.id });
    await refusedFor('worker-app', { clientId: web!.clientId });
    await refusedFor('stowaway', {});
    await refusedFor('stowaway', { clientId: web!.clientId });
    await refusedFor('stowaway', { resourceId: web!.id });
    // Another namespace's pod, of a service account named like the bound one, no binding matching it. (A matching
    // label would get it in both modes without --forceNamespaced, as in the original; that is the tenant flags' job.)
    const other = `${ns}-other`;
    await t.createNamespace(other);
    await t.createServiceAccount(other, 'web');
    await t.startPod(other, 'thief', 'thief', { serviceAccountName: 'web', nodeName: node });
    try {
      for (const ask of [{ clientId: web!.clientId }, { resourceId: web!.id }, {}]) {
        const r = await t.podToken(other, 'thief', { ...ask, maxRetries: 0 });
        expect(r.ok, JSON.stringify(r)).toBe(false);
      }
      expect(await t.assignedFor(other, 'thief')).toEqual([]);
      expect(subjects(web!)).toEqual([SUBJECT(ns, 'web')]);
    } finally {
      await t.deletePod(other, 'thief').catch(() => undefined);
    }
    // NMI minted service-account tokens only for the callers it served, each for its own service account.
    const minted = t.sandbox.api.requestLog().filter((e) => e.method === 'POST' && e.path.endsWith('/token') && e.path.includes(`/namespaces/${ns}/`));
    expect(minted.length).toBeGreaterThan(0);
    expect(minted.every((e) => e.path === `/api/v1/namespaces/${ns}/serviceaccounts/web/token` || e.path === `/api/v1/namespaces/${ns}/serviceaccounts/worker/token`)).toBe(true);
    expect(t.sandbox.api.requestLog().filter((e) => e.method === 'POST' && e.path.includes(`/namespaces/${other}/serviceaccounts/`))).toEqual([]);
    // The pod itself asking the API server for the bound pod's service-account token gets none (no credentials).
    const direct = await t.sandbox.execInPod(`${ns}/stowaway`, ['node', '-e', tokenRequestProbe(t.sandbox.endpoints.apiServer, ns)], { timeoutMs: 20_000 });
    const answer = JSON.parse(direct.stdout.trim().split('\n').pop() ?? '{}') as { status?: number; token?: boolean };
    expect(answer.token, direct.stdout).toBe(false);
    expect(answer.status, direct.stdout).not.toBe(201);
    expect(vmPatches()).toEqual([]);
  }, 180_000);

  it('has sent zero VM/VMSS PATCHes for every federated test above', () => {
    expect(vmPatches()).toEqual([]);
    expect(t.sandbox.azure.requestLog().some((e) => e.operation === 'fic_put')).toBe(true);
  });

  it('serves an attached identity and a federated one side by side on one node: only the attached one is PATCHed onto the VMSS', async () => {
    const [attached, fed] = await setup(['web'], 'attached', 'federated');
    t.sandbox.azure.clearRequestLog();
    const node = t.sandbox.endpoints.nodes[0]!.name;
    await t.createIdentity(ns, 'att', spec(attached!, 'Attached'));
    await t.createBinding(ns, 'att-binding', 'att', 'att');
    await t.createIdentity(ns, 'fed', spec(fed!));
    await t.createBinding(ns, 'fed-binding', 'fed', 'fed');
    await t.startPod(ns, 'att-app', 'att', { serviceAccountName: 'web', nodeName: node });
    await t.startPod(ns, 'fed-app', 'fed', { serviceAccountName: 'web', nodeName: node });
    await assigned('att-app');
    await assigned('fed-app');
    expectIdentity((await t.podToken(ns, 'att-app')).claims, attached!);
    expectIdentity((await tokenOf('fed-app')).claims, fed!);
    expect(t.computeIdentities()).toContain(attached!.id.toLowerCase());
    expect(onAnyVm(fed!)).toBe(false);
    expect(subjects(fed!)).toEqual([SUBJECT(ns, 'web')]);
    expect(subjects(attached!)).toEqual([]);
    expect(vmPatches().length).toBeGreaterThan(0);
    // The attached one came through the node's IMDS, the federated one through Azure AD.
    const log = t.sandbox.azure.requestLog();
    expect(log.some((e) => e.operation === 'imds_token' && e.status === 200)).toBe(true);
    expect(log.some((e) => e.operation === 'aad_token' && e.status === 200)).toBe(true);
    // Each pod asking for the other's identity is refused.
    expect((await t.podToken(ns, 'att-app', { clientId: fed!.clientId, maxRetries: 0 })).ok).toBe(false);
    expect((await t.podToken(ns, 'fed-app', { clientId: attached!.clientId, maxRetries: 0 })).ok).toBe(false);
  }, 120_000);
});

/** One IMDS token request from a pod, printed as {status, contentType, body}. */
const IMDS_PROBE = `
  fetch('http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com', { headers: { Metadata: 'true' }, signal: AbortSignal.timeout(30000) })
    .then(async (r) => console.log(JSON.stringify({ status: r.status, contentType: r.headers.get('content-type'), body: await r.text() })), (e) => console.log(JSON.stringify({ error: String(e.cause?.code ?? e) })));`;

/** `explain` as an admin runs it against the sandbox (its kubeconfig, azure.json and ARM endpoint). */
function explainCli(t: TestSandbox, args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'cmd/explain.ts', '--sandbox', t.sandbox.stateDir, ...args], { cwd: REPO_ROOT, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** A pod's script that asks the API server, without credentials, for a TokenRequest of its namespace's `web` service account. */
function tokenRequestProbe(apiServer: string, ns: string): string {
  const body = { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: ['api://AzureADTokenExchange'] } };
  return `
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
    fetch(${JSON.stringify(`${apiServer}/api/v1/namespaces/${ns}/serviceaccounts/web/token`)}, { method: 'POST', headers: { 'content-type': 'application/json' }, body: ${JSON.stringify(JSON.stringify(body))}, signal: AbortSignal.timeout(5000) })
      .then(async (r) => { const text = await r.text(); let token = false; try { token = typeof JSON.parse(text)?.status?.token === 'string'; } catch {} console.log(JSON.stringify({ status: r.status, token })); },
        (e) => console.log(JSON.stringify({ status: 0, token: false, error: String(e.cause?.code ?? e) })));`;
}
