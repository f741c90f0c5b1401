// An upgrade from the original aad-pod-identity (v1.8.x), end to end on the netns sandbox: a cluster as the original
// leaves it is switched to our MIC, and no pod notices.
//
// What stands in for what:
// - CRDs: the API emulator starts with the original's AzureAssignedIdentity CRD (test/fixtures/original-crds: no
//   status subresource, structural schema that prunes unknown keys) and ours for the other kinds, as `helm upgrade`
//   leaves them (Helm never upgrades crds/).
// - The original MIC: its state is written by hand, in its format, before any MIC of ours runs: the identities
//   attached to the VMSS directly in the Azure emulator, and the AAIs (below). Its leader lock is
//   test/helpers/original-mic.ts, a stand-in that renews the Endpoints record default/aad-pod-identity-mic in
//   client-go's format and, like the original, never releases it (on SIGTERM the pod just goes; the record expires).
// - The original NMI: our NMI runs on each node from the start and serves the "before" state. It has to: the
//   original NMI is a Go binary this repository does not have. The NMI side of the switch (the DaemonSet's rolling
//   update) is covered by the NMI restart tests; here NMI runs throughout so that any token failure can only come
//   from what MIC does to the AAIs and the VMSS. Its flags are the original's, with waits made strict
//   (STRICT_NMI_ARGS) so that a moment without an assigned AAI fails a request instead of delaying it, and every
//   poll asks for a resource of its own so that NMI's token cache cannot hide an identity gone from the VMSS.
// - AAIs in the original's format: `a1`, `a2` as v1.8.x writes them (finalizer, `nodename` label, full embedded
//   AzureIdentity/AzureIdentityBinding copies with their resourceVersions, `status.status: Assigned` on the main
//   resource, `availableReplicas: 1`). `b1` as an old MIC left it, from before the type upgrade: no finalizer (added
//   in v1.6.1), no pod-uid label, `status.status: ""` (MIC < 1.5; read as assigned), for an AzureIdentity and a
//   binding still in the pre-1.6 capitalised spelling (`ResourceID`, `ClientID`, `Type`, `AzureIdentity`,
//   `Selector`). No `aad-pod-identity-config` ConfigMap: the type upgrade is not recorded as done, so the objects
//   are genuinely not upgraded when our MIC arrives.
//
// Sequence and assertions: pods get tokens (a poller runs @azure/identity in every pod, one request after another,
// from before our MIC starts to after it has taken over); our two MIC replicas start and stay standby for two lease
// durations while the stand-in renews (healthz `Not Active`, no AAI write, no lock write, no ARM request); the
// stand-in stops and ours take over only once its record has expired; no token request failed, no AAI was deleted
// or recreated (uids unchanged, never out of an assigned state), no ARM PATCH was sent, and the lock holder is ours.
// Then new pods (on an existing binding, and on a new identity that needs an ARM PATCH) reach Assigned and get
// their tokens, and the original's pods, deleted, have their AAIs removed and their identity released. Nothing is left behind: namespaces, links and nat rules are checked after stop.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { upgradedClusterCrdDir } from '../helpers/apiserver.js';
import { shouldSkipNetns } from '../helpers/netns.js';
import { holdOriginalMicLock, readOriginalLeaderRecord, type OriginalMicLock } from '../helpers/original-mic.js';
import { eventually, hostNetworkState, startTestSandbox, type TestSandbox, type TokenResult } from '../helpers/sandbox.js';

const skip = shouldSkipNetns('upgrade from the original (netns sandbox)');

const GROUP = 'aadpodidentity.k8s.io';
const VERSION = 'v1';
const NS = 'upgrade';
const FINALIZER = 'azureassignedidentity.finalizers.aadpodidentity.k8s.io';
/** The stand-in's lease, equal to our MIC's --leader-election-duration in the test sandbox (FAST_MIC_ARGS). */
const LEASE_SECONDS = 3;
const OLD_HOLDER = 'mic-7d9f8c6b5-original';
const ARM_OPERATIONS = /^(rg|vm|vmss|operation|msi)_/;
/**
 * NMI waits at most ~200 ms for an assignment (the original waits 16 x 5 s): an AAI missing, or not in an assigned
 * state, when a request arrives is a failed request here, not a delay that hides it.
 */
const STRICT_NMI_ARGS = ['--find-identity-retry-interval=100ms', '--retry-attempts-for-created=2', '--retry-attempts-for-assigned=2'];
/** A resource of its own per request: NMI's token cache never answers, every request reaches the node's IMDS, which refuses an identity not on the VMSS. */
let pollSeq = 0;
const pollScope = () => `https://upgrade-poll-${++pollSeq}.example.com/.default`;

interface PollRecord {
  readonly pod: string;
  readonly start: number;
  readonly end: number;
  readonly result: TokenResult;
}

describe.skipIf(skip)('upgrade from the original on the netns sandbox', () => {
  let t: TestSandbox;
  let crds: Awaited<ReturnType<typeof upgradedClusterCrdDir>>;
  let before: Awaited<ReturnType<typeof hostNetworkState>>;
  let old: OriginalMicLock | undefined;

  beforeAll(async () => {
    before = await hostNetworkState();
    crds = await upgradedClusterCrdDir();
    t = await startTestSandbox({ network: 'netns', nodes: 2, identities: 3, crdDir: crds.dir, nmi: { args: STRICT_NMI_ARGS }, mic: { replicas: 0 } });
  }, 120_000);

  afterAll(async () => {
    await old?.stop();
    const name = t?.sandbox.network.name;
    await t?.stop();
    await crds?.cleanup();
    if (name) expect(await hostNetworkState(name)).toEqual({ namespaces: [], natRules: [], links: [] });
    expect((await hostNetworkState()).natRules).toEqual(before.natRules);
  }, 120_000);

  it("keeps every pod's token while our MIC takes over from the original's lock, state and format", async () => {
    const sb = t.sandbox;
    const [idA, idB, idC] = sb.endpoints.identities;
    if (!idA || !idB || !idC) throw new Error('the sandbox made fewer than 3 identities');
    const [node0, node1] = sb.endpoints.nodes;
    if (!node0 || !node1) throw new Error('the sandbox made fewer than 2 nodes');
    const vmss = sb.endpoints.azure.computeNames[0] ?? '';
    const custom = t.custom;
    const get = async (plural: string, name: string, namespace = NS) =>
      (await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural, name })) as Record<string, unknown>;
    const createAai = (body: Record<string, unknown>) =>
      custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: 'default',
        plural: 'azureassignedidentities',
        body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'AzureAssignedIdentity', ...body },
      }) as Promise<{ metadata: { uid: string } }>;

    // ---- 1. The cluster as the original leaves it.
    await t.createNamespace(NS);
    await t.createIdentity(NS, 'ident-a', { type: 0, resourceID: idA.id, clientID: idA.clientId });
    await t.createBinding(NS, 'bind-a', 'ident-a', 'app-a');
    // Pre-1.6 spelling, never type-upgraded.
    await t.createCustom(NS, 'azureidentities', { kind: 'AzureIdentity', metadata: { name: 'ident-b', namespace: NS }, spec: { Type: 0, ResourceID: idB.id, ClientID: idB.clientId } });
    await t.createCustom(NS, 'azureidentitybindings', { kind: 'AzureIdentityBinding', metadata: { name: 'bind-b', namespace: NS }, spec: { AzureIdentity: 'ident-b', Selector: 'app-b' } });
    expect(((await get('azureidentities', 'ident-b')).spec as Record<string, unknown>).ResourceID).toBe(idB.id);
    await Promise.all([
      t.startPod(NS, 'a1', 'app-a', { nodeName: node0.name }),
      t.startPod(NS, 'a2', 'app-a', { nodeName: node1.name }),
      t.startPod(NS, 'b1', 'app-b', { nodeName: node1.name }),
    ]);
    sb.azure.setVmIdentities({ vmss, resourceGroup: sb.resourceGroup }, [idA.id, idB.id]);

    const identA = await get('azureidentities', 'ident-a');
    const bindA = await get('azureidentitybindings', 'bind-a');
    const aaiV18 = (pod: string, nodeName: string) => ({
      metadata: { name: `${pod}-${NS}-ident-a`, labels: { nodename: nodeName }, finalizers: [FINALIZER] },
      spec: { azureIdentityRef: identA, azureBindingRef: bindA, pod, podNamespace: NS, nodename: nodeName },
      status: { status: 'Assigned', availableReplicas: 1 },
    });
    // MIC < 1.5 marshalled the embedded copies from its Go structs: camelCase, whatever the user had written.
    const identBRaw = await get('azureidentities', 'ident-b');
    const bindBRaw = await get('azureidentitybindings', 'bind-b');
    const identB = { ...identBRaw, spec: { type: 0, resourceID: idB.id, clientID: idB.clientId } };
    const bindB = { ...bindBRaw, spec: { azureIdentity: 'ident-b', selector: 'app-b' } };
    const uids = new Map<string, string>();
    for (const [name, body] of [
      [`a1-${NS}-ident-a`, aaiV18('a1', node0.name)],
      [`a2-${NS}-ident-a`, aaiV18('a2', node1.name)],
      [
        `b1-${NS}-ident-b`,
        {
          metadata: { name: `b1-${NS}-ident-b`, labels: { nodename: node1.name } },
          spec: { azureIdentityRef: identB, azureBindingRef: bindB, pod: 'b1', podNamespace: NS, nodename: node1.name },
          status: { status: '', availableReplicas: 1 },
        },
      ],
    ] as const) {
      uids.set(name, (await createAai(body)).metadata.uid);
    }
    // Stored as written: status on the main resource, nothing pruned that matters.
    expect(((await get('azureassignedidentities', `b1-${NS}-ident-b`, 'default')).status as Record<string, unknown>).status).toBe('');
    expect(((await get('azureassignedidentities', `a1-${NS}-ident-a`, 'default')).status as Record<string, unknown>).status).toBe('Assigned');

    old = holdOriginalMicLock(t.core, { identity: OLD_HOLDER, leaseDurationSeconds: LEASE_SECONDS, renewMs: 500 });
    await eventually(async () => (await readOriginalLeaderRecord(t.core))?.holderIdentity === OLD_HOLDER, 10_000, 'stand-in holds the Endpoints lock');

    const expected: Record<string, string> = { a1: idA.clientId, a2: idA.clientId, b1: idB.clientId };
    // The "before" state works (NMI's watch may trail the API server by a moment: wait for it, the poller does not).
    for (const pod of Object.keys(expected)) {
      await eventually(async () => (await t.podToken(NS, pod, { maxRetries: 0 })).claims?.appid === expected[pod], 20_000, `${pod} gets its token before the switch`);
    }

    // ---- 2. A token poller per pod and an AAI sampler, from now to the end of the takeover.
    const polls: PollRecord[] = [];
    const samples = new Map<string, Array<{ uid: string; state: string }>>();
    let running = true;
    const poller = (pod: string) =>
      (async () => {
        while (running) {
          const start = Date.now();
          const result = await t.podToken(NS, pod, { maxRetries: 0, timeoutMs: 20_000, scope: pollScope() });
          polls.push({ pod, start, end: Date.now(), result });
        }
      })();
    const sampler = (async () => {
      while (running) {
        const all = await t.listAllAssigned().catch(() => undefined);
        for (const name of uids.keys()) {
          const aai = all?.find((a) => (a.metadata as { name?: string }).name === name);
          if (all === undefined) continue;
          const list = samples.get(name) ?? [];
          list.push({ uid: aai ? String((aai.metadata as { uid?: string }).uid) : 'missing', state: aai ? String((aai.status as { status?: string } | undefined)?.status ?? 'none') : 'missing' });
          samples.set(name, list);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const loops = [...Object.keys(expected).map(poller), sampler];
    const stopLoops = async () => {
      running = false;
      await Promise.all(loops);
    };

    try {
      // ---- 3. Our MIC, two replicas, while the stand-in renews: standby.
      const apiMark = sb.api.requestLog().length;
      const azureMark = sb.azure.requestLog().length;
      const mics = await Promise.all([sb.startMic(0), sb.startMic(1)]);
      const probes = mics.map((m) => String((JSON.parse(m.readyLine) as { probe?: string }).probe));
      const health = () => Promise.all(probes.map(async (p) => (await fetch(`${p}/healthz`)).text()));
      const standbyUntil = Date.now() + 2 * LEASE_SECONDS * 1000 + 500;
      while (Date.now() < standbyUntil) {
        expect(await health()).toEqual(['Not Active', 'Not Active']);
        expect((await readOriginalLeaderRecord(t.core))?.holderIdentity).toBe(OLD_HOLDER);
        await new Promise((r) => setTimeout(r, 200));
      }
      const standbyApi = sb.api.requestLog().slice(apiMark);
      expect(standbyApi.filter((r) => r.path.includes('/azureassignedidentities') && r.method !== 'GET')).toEqual([]);
      expect(standbyApi.filter((r) => r.path.includes('/leases') && r.method !== 'GET')).toEqual([]);
      expect(sb.azure.requestLog().slice(azureMark).filter((r) => ARM_OPERATIONS.test(r.operation))).toEqual([]);

      // ---- 4. The stand-in stops without releasing: ours take over once its record has expired.
      await old.stop();
      const lastRenew = old.lastRenew();
      const stoppedAt = Date.now();
      const leaderAt = await eventually(async () => ((await health()).includes('Active') ? Date.now() : undefined), 30_000, 'one of our MICs Active');
      expect(leaderAt).toBeGreaterThan(stoppedAt);
      // The record names its renewTime in whole seconds: it expires at the earliest LEASE_SECONDS - 1 s after the last renewal.
      expect(leaderAt - lastRenew).toBeGreaterThanOrEqual((LEASE_SECONDS - 1) * 1000);
      const states = await health();
      expect(states.filter((s) => s === 'Active')).toHaveLength(1);
      const leader = states.indexOf('Active');
      expect((await readOriginalLeaderRecord(t.core))?.holderIdentity).toBe(`mic-${leader}`);

      // Every pod's token after the new leader has settled (its first cycles done), with the poller still running.
      const settled = Date.now() + 2 * LEASE_SECONDS * 1000;
      await eventually(
        () => Date.now() > settled && Object.keys(expected).every((pod) => polls.some((p) => p.pod === pod && p.start > settled)),
        60_000,
        'a token poll of every pod after the takeover',
      );
      await stopLoops();

      // ---- 5. Nothing a pod could notice.
      const failures = polls.filter((p) => !p.result.ok || p.result.claims?.appid !== expected[p.pod]);
      expect(failures.map((f) => ({ pod: f.pod, at: new Date(f.start).toISOString(), ms: f.end - f.start, result: f.result }))).toEqual([]);
      for (const pod of Object.keys(expected)) expect(polls.filter((p) => p.pod === pod && p.start < stoppedAt).length, pod).toBeGreaterThan(0);
      for (const [name, uid] of uids) {
        const seen = samples.get(name) ?? [];
        expect(seen.length, name).toBeGreaterThan(0);
        expect(new Set(seen.map((s) => s.uid)), name).toEqual(new Set([uid]));
        expect(seen.filter((s) => s.state !== 'Assigned' && s.state !== ''), name).toEqual([]);
      }
      const aaiPath = '/apis/aadpodidentity.k8s.io/v1/namespaces/default/azureassignedidentities';
      const sinceMic = sb.api.requestLog().slice(apiMark);
      expect(sinceMic.filter((r) => r.path.startsWith(aaiPath) && (r.method === 'DELETE' || r.method === 'POST'))).toEqual([]);
      expect(sb.azure.requestLog().filter((r) => r.method === 'PATCH')).toEqual([]);
      expect(t.computeIdentities()).toEqual(expect.arrayContaining([idA.id.toLowerCase(), idB.id.toLowerCase()]));
      for (const [name, uid] of uids) expect((await get('azureassignedidentities', name, 'default')).metadata).toMatchObject({ uid });

      // ---- 6. New pods after the switch: on an existing binding, and on a new identity (an ARM PATCH now).
      await t.createIdentity(NS, 'ident-c', { type: 0, resourceID: idC.id, clientID: idC.clientId });
      await t.createBinding(NS, 'bind-c', 'ident-c', 'app-c');
      await Promise.all([t.startPod(NS, 'a3', 'app-a', { nodeName: node0.name }), t.startPod(NS, 'c1', 'app-c', { nodeName: node1.name })]);
      for (const [pod, ident] of [
        ['a3', 'ident-a'],
        ['c1', 'ident-c'],
      ] as const) {
        await eventually(
          async () => ((await get('azureassignedidentities', `${pod}-${NS}-${ident}`, 'default').catch(() => undefined))?.status as { status?: string } | undefined)?.status === 'Assigned',
          30_000,
          `${pod}'s AAI Assigned`,
        );
      }
      for (const [pod, clientId] of [
        ['a3', idA.clientId],
        ['c1', idC.clientId],
      ] as const) {
        const token = await eventually(async () => {
          const r = await t.podToken(NS, pod, { maxRetries: 0 });
          return r.ok ? r : undefined;
        }, 20_000, `${pod} gets a token`);
        expect(token.claims?.appid).toBe(clientId);
      }
      expect(t.computeIdentities()).toContain(idC.id.toLowerCase());
      // The original's AAIs are still the same objects.
      for (const [name, uid] of uids) expect((await get('azureassignedidentities', name, 'default')).metadata).toMatchObject({ uid });

      // ---- 7. The original's objects through to the end of their life: b1 goes, its old-format AAI (no finalizer)
      // is removed and its identity leaves the VMSS; a2 goes, its v1.8 AAI (finalizer) too, idA stays for a1 and a3.
      await t.deletePod(NS, 'b1');
      await t.deletePod(NS, 'a2');
      await eventually(
        async () => {
          const names = (await t.listAllAssigned()).map((a) => (a.metadata as { name?: string }).name);
          return !names.includes(`b1-${NS}-ident-b`) && !names.includes(`a2-${NS}-ident-a`) && !t.computeIdentities().includes(idB.id.toLowerCase());
        },
        30_000,
        "b1's and a2's AAIs gone and ident-b off the VMSS",
      );
      expect(t.computeIdentities()).toContain(idA.id.toLowerCase());
      expect(await t.podToken(NS, 'a1', { maxRetries: 0, scope: pollScope() })).toMatchObject({ ok: true, claims: { appid: idA.clientId } });
    } finally {
      await stopLoops();
    }
  }, 150_000);
});
