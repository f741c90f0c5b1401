// The ARM identity client through the real @azure/arm-compute SDK and a real ClientSecretCredential against the
// Azure emulator: attach, detach, chunking, no-op skipping, throttling, bad identities, LRO, coalescing, concurrency.
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { armCredential } from '../../src/azure/credentials.js';
import { type ArmIdentityClientOptions, createArmIdentityClient } from '../../src/mic/arm/client.js';
import type { ArmIdentityClient } from '../../src/mic/arm/worker.js';
import { servicePrincipalCloudConfig, startTestAzure, type TestAzure } from '../helpers/azure.js';

const logger = pino({ level: 'silent' });
let az: TestAzure;

beforeEach(async () => {
  az = await startTestAzure();
});
afterEach(async () => {
  await az?.stop();
});

/** The client as MIC builds it: azure.json → cloud config (emulator endpoints) → credential → client. */
function armClient(extra: Partial<ArmIdentityClientOptions> = {}): ArmIdentityClient {
  const e = az.emulator;
  const config = servicePrincipalCloudConfig(az);
  return createArmIdentityClient({
    credential: armCredential(config, { caPem: e.caPem, tokenTimeoutMs: 10_000 }),
    subscriptionId: config.subscriptionId,
    resourceGroup: config.resourceGroup,
    endpoint: config.environment.resourceManagerEndpoint,
    scope: `${config.environment.resourceManagerAudience}/.default`,
    caPem: e.caPem,
    logger,
    pollIntervalMs: 20,
    retryIntervalMs: 20,
    ...extra,
  });
}

function identities(...names: string[]): string[] {
  return names.map((n) => az.emulator.createUserAssignedIdentity(az.resourceGroup, n).id);
}
const lower = (ids: readonly string[]): string[] => ids.map((i) => i.toLowerCase()).sort();
const log = (op: string): { status: number; target: string }[] => az.emulator.requestLog().filter((r) => r.operation === op);
/** The emulator logs a request when its response has finished, which can trail the client's view by a tick. */
async function logged(op: string, n: number): Promise<void> {
  for (let i = 0; i < 200 && log(op).length < n; i++) await new Promise((r) => setTimeout(r, 5));
}
const vmIds = (name: string): string[] => lower(az.emulator.getVm(az.resourceGroup, name)!.identity.userAssignedIdentities);
const vmssIds = (name: string): string[] => lower(az.emulator.getVmss(az.resourceGroup, name)!.identity.userAssignedIdentities);

describe('ArmIdentityClient against the Azure emulator', () => {
  it('attaches and detaches on a VM, leaving the system-assigned identity and a shared identity alone', async () => {
    const [a, b, shared] = identities('id-a', 'id-b', 'id-shared');
    az.emulator.createVm(az.resourceGroup, 'vm1', { systemAssigned: true, userAssigned: [a!, shared!] });
    const arm = armClient();
    const vm = { kind: 'vm', name: 'vm1' } as const;

    const res = await arm.apply(vm, { add: [b!], remove: [a!] });
    expect(res.outcomes.map((o) => o.status)).toEqual(['detached', 'attached']);
    expect(vmIds('vm1')).toEqual(lower([b!, shared!]));
    expect(await arm.getIdentities(vm)).toEqual({ ids: lower([b!, shared!]), systemAssigned: true });

    await arm.apply(vm, { remove: [b!, shared!] });
    const info = az.emulator.getVm(az.resourceGroup, 'vm1')!;
    expect(info.identity.userAssignedIdentities).toEqual([]);
    expect(info.identity.systemAssigned).toBe(true);
  });

  it('never detaches an immutable identity and sends no PATCH when nothing else changes', async () => {
    const [a] = identities('cluster-id');
    const clientId = az.emulator.getUserAssignedIdentity(a!)!.clientId;
    az.emulator.createVmss(az.resourceGroup, 'ss1', { instances: 1, userAssigned: [a!] });
    az.emulator.clearRequestLog();
    const res = await armClient({ immutableIdentities: [clientId.toUpperCase()] }).apply({ kind: 'vmss', name: 'ss1' }, { remove: [a!] });
    expect(res.outcomes[0]).toMatchObject({ status: 'kept', reason: 'immutable' });
    expect(vmssIds('ss1')).toEqual(lower([a!]));
    expect(log('vmss_patch')).toHaveLength(0);
  });

  it('skips the PATCH when the identity is already attached (request log proves it)', async () => {
    const [a] = identities('id-a');
    az.emulator.createVm(az.resourceGroup, 'vm1', { userAssigned: [a!] });
    az.emulator.clearRequestLog();
    const res = await armClient().apply({ kind: 'vm', name: 'vm1' }, { add: [a!.toUpperCase()] });
    expect(res).toMatchObject({ ok: true, patchCount: 0 });
    await logged('vm_get', 1);
    expect(log('vm_get')).toHaveLength(1);
    expect(log('vm_patch')).toHaveLength(0);
  });

  it('splits more than 150 identities into several PATCHes', async () => {
    const ids = identities(...Array.from({ length: 320 }, (_, i) => `bulk-${i}`));
    az.emulator.createVmss(az.resourceGroup, 'ss1', { instances: 2 });
    az.emulator.clearRequestLog();
    const res = await armClient().apply({ kind: 'vmss', name: 'ss1' }, { add: ids });
    expect(res.ok).toBe(true);
    expect(res.patchCount).toBe(3);
    await logged('vmss_patch', 3);
    expect(log('vmss_patch').filter((r) => r.status < 300)).toHaveLength(3);
    expect(vmssIds('ss1')).toEqual(lower(ids));
  });

  it('waits out a 429 Retry-After and then succeeds', async () => {
    const [a] = identities('id-a');
    az.emulator.createVm(az.resourceGroup, 'vm1');
    az.emulator.injectFault({ operation: 'vm_patch', status: 429, retryAfter: 1, count: 1 });
    az.emulator.clearRequestLog();
    const res = await armClient().apply({ kind: 'vm', name: 'vm1' }, { add: [a!] });
    expect(res.outcomes[0]!.status).toBe('attached');
    await logged('vm_patch', 2);
    expect(log('vm_patch').map((r) => r.status)).toEqual([429, 202]);
    expect(vmIds('vm1')).toEqual(lower([a!]));
  });

  it('reports a throttled failure (with the delay) when Retry-After exceeds what it may wait', async () => {
    const [a] = identities('id-a');
    az.emulator.createVm(az.resourceGroup, 'vm1');
    az.emulator.injectFault({ operation: 'vm_get', status: 429, retryAfter: 120, count: 1 });
    const arm = armClient({ maxThrottleWaitMs: 500 });
    const res = await arm.apply({ kind: 'vm', name: 'vm1' }, { add: [a!] });
    expect(res.outcomes[0]).toMatchObject({ status: 'failed', reason: 'throttled' });
    expect((res.outcomes[0] as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(100_000);
    az.emulator.clearRequestLog();
    await arm.apply({ kind: 'vm', name: 'vm1' }, { add: [a!] });
    expect(log('vm_get')).toHaveLength(0); // gated: ARM is not asked again before the Retry-After
  });

  it('attaches the good identities of a batch and reports the refused and missing ones per ID', async () => {
    const [good1, good2] = identities('good-1', 'good-2');
    // No role for MIC's principal on this resource group: ARM refuses to link identities from it.
    az.emulator.createResourceGroup('rg-no-role');
    const denied = az.emulator.createUserAssignedIdentity('rg-no-role', 'denied').id;
    const missing = `/subscriptions/${az.emulator.subscriptionId}/resourceGroups/${az.resourceGroup}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/never-created`;
    az.emulator.createVmss(az.resourceGroup, 'ss1', { instances: 1 });
    const res = await armClient().apply({ kind: 'vmss', name: 'ss1' }, { add: [good1!, denied, missing, good2!] });
    const byId = Object.fromEntries(res.outcomes.map((o) => [o.id, o]));
    expect(byId[good1!]!.status).toBe('attached');
    expect(byId[good2!]!.status).toBe('attached');
    expect(byId[denied]).toMatchObject({ status: 'failed', reason: 'LinkedAuthorizationFailed' });
    expect(byId[missing]).toMatchObject({ status: 'failed', reason: 'FailedIdentityOperation' });
    expect(res.ok).toBe(false);
    expect(vmssIds('ss1')).toEqual(lower([good1!, good2!]));
  });

  it('polls a 202 long-running operation to completion', async () => {
    const [a] = identities('id-a');
    az.emulator.createVmss(az.resourceGroup, 'ss1', { instances: 1 });
    az.emulator.setLroMode('async');
    az.emulator.setLatency('vmss_patch', 200);
    az.emulator.clearRequestLog();
    const res = await armClient().apply({ kind: 'vmss', name: 'ss1' }, { add: [a!] });
    expect(res.outcomes[0]!.status).toBe('attached');
    await logged('vmss_patch', 1);
    expect(log('vmss_patch').map((r) => r.status)).toEqual([202]);
    expect(log('operation_get').length).toBeGreaterThan(0);
    expect(vmssIds('ss1')).toEqual(lower([a!]));
  });

  it('coalesces concurrent calls for one VMSS into few PATCHes, each caller getting its own outcome', async () => {
    const ids = identities(...Array.from({ length: 51 }, (_, i) => `c-${i}`));
    az.emulator.createVmss(az.resourceGroup, 'ss1', { instances: 3 });
    az.emulator.setLatency('vmss_patch', 300);
    az.emulator.clearRequestLog();
    const arm = armClient();
    const t = { kind: 'vmss', name: 'ss1' } as const;
    const first = arm.apply(t, { add: [ids[0]!] });
    while (log('vmss_patch').length === 0) await new Promise((r) => setTimeout(r, 10));
    const rest = ids.slice(1).map((i) => arm.apply(t, { add: [i] }));
    const results = await Promise.all([first, ...rest]);
    expect(results.every((r, i) => r.outcomes.length === 1 && r.outcomes[0]!.id === ids[i] && r.outcomes[0]!.status === 'attached')).toBe(true);
    await logged('vmss_patch', 2);
    expect(log('vmss_patch')).toHaveLength(2);
    expect(vmssIds('ss1')).toEqual(lower(ids));
  });

  it('does not hold one VMSS behind a slow call on another', async () => {
    const [a, b] = identities('id-a', 'id-b');
    az.emulator.createVmss(az.resourceGroup, 'slow', { instances: 1 });
    az.emulator.createVmss(az.resourceGroup, 'fast', { instances: 1 });
    az.emulator.injectFault({ operation: 'vmss_patch', target: 'slow', latencyMs: 1500, count: 1 });
    const arm = armClient({ maxConcurrency: 4 });
    let slowDone = false;
    const slow = arm.apply({ kind: 'vmss', name: 'slow' }, { add: [a!] }).then((r) => {
      slowDone = true;
      return r;
    });
    const fast = await arm.apply({ kind: 'vmss', name: 'fast' }, { add: [b!] });
    expect(fast.outcomes[0]!.status).toBe('attached');
    expect(slowDone).toBe(false);
    expect((await slow).outcomes[0]!.status).toBe('attached');
  });
});
