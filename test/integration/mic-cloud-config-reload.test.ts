// MIC re-reads azure.json when it changes, as the original's file watcher did: a rotated client secret or a new
// service principal is used by the next ARM call without a restart; a broken file keeps the previous config and
// says so in the log, an Event on MIC's Pod and a metric. The file is replaced the ways kubelet and editors do it
// (a Secret volume's `..data` symlink swap, an in-place write) and the fallback poll is switched off (60 s), so
// the directory watch is what is tested.
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { emulatorSecretCredential, grantClusterRoles, ARM_SCOPE } from '../helpers/azure.js';
import { azureJsonText, eventually, NODES, startMicWorld, type MicWorld } from './mic-world.js';

let w: MicWorld;
let dir: string;
beforeEach(async () => {
  w = await startMicWorld();
  dir = await mkdtemp(join(tmpdir(), 'mic-azure-json-'));
});
afterEach(async () => {
  await w?.stop();
  await rm(dir, { recursive: true, force: true });
});

const stateOf = async (name: string): Promise<string | undefined> => (await w.assigned()).find((a) => a.name === name)?.state;

/** Lays the file out as a Secret volume does: azure.json -> ..data/azure.json, ..data -> a timestamped dir. */
async function secretVolume(text: string): Promise<{ path: string; swap(text: string): Promise<void> }> {
  let n = 0;
  const version = async (t: string): Promise<string> => {
    const name = `..v${++n}`;
    await mkdir(join(dir, name));
    await writeFile(join(dir, name, 'azure.json'), t);
    return name;
  };
  await symlink(await version(text), join(dir, '..data'));
  await symlink(join('..data', 'azure.json'), join(dir, 'azure.json'));
  return {
    path: join(dir, 'azure.json'),
    async swap(t) {
      const next = await version(t);
      await symlink(next, join(dir, '..data_tmp'));
      await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    },
  };
}

async function assignOne(name: string, node: string): Promise<void> {
  const id = w.msi(`id-${name}`);
  await w.createIdentity(`id-${name}`, { type: 0, resourceID: id.id, clientID: id.clientId });
  await w.createBinding(`b-${name}`, { azureIdentity: `id-${name}`, selector: name });
  await w.createPod(name, node, name);
}

describe('MIC and a changing azure.json', () => {
  it('uses a rotated client secret for the next ARM call after a Secret-volume swap, without a restart', async () => {
    const sp = w.az.servicePrincipal;
    const vol = await secretVolume(azureJsonText(w.az, sp));
    const mic = await w.startMic({ azureJson: { path: vol.path, pollIntervalMs: 60_000 } });
    await assignOne('before', NODES.vm);
    await eventually(async () => expect(await stateOf('before-default-id-before')).toBe('Assigned'));

    // Rotate in AAD: the old secret stops working at once.
    const newSecret = `secret-${randomUUID()}`;
    w.az.emulator.registerServicePrincipal({ clientId: sp.clientId, secret: newSecret });
    await expect(emulatorSecretCredential(w.az.emulator, sp.clientId, sp.secret).getToken(ARM_SCOPE)).rejects.toThrow();
    await vol.swap(azureJsonText(w.az, { clientId: sp.clientId, secret: newSecret }));
    await eventually(async () => expect((await w.events('cloud config reloaded')).length).toBe(1));
    const [reloaded] = await w.events('cloud config reloaded');
    expect(reloaded).toMatchObject({ type: 'Normal', kind: 'Pod' });
    expect(reloaded!.message).toContain('aadClientSecret');
    expect(reloaded!.message).not.toContain(newSecret);

    w.az.emulator.clearRequestLog();
    await assignOne('after', NODES.vmss0);
    await eventually(async () => expect(await stateOf('after-default-id-after')).toBe('Assigned'));
    // The old client's cached token was dropped with it: a new token was fetched, with the new secret (the old
    // one is refused by AAD now), and the ARM calls that followed succeeded.
    const log = w.az.emulator.requestLog();
    expect(log.filter((r) => r.operation === 'aad_token').map((r) => r.status)).toEqual([200]);
    expect(log.filter((r) => r.operation === 'vmss_patch').every((r) => r.status < 300)).toBe(true);
    const metrics = await (await fetch(mic.metricsUrl)).text();
    expect(metrics).toMatch(/aadpodidentity_mic_cloud_config_reload_count\{result="applied"\} 1/);
  });

  it('keeps the previous config when the new file is invalid, then takes the fixed one (a new service principal)', async () => {
    const a = w.az.servicePrincipal;
    const path = join(dir, 'azure.json');
    await writeFile(path, azureJsonText(w.az, a));
    const mic = await w.startMic({ azureJson: { path, pollIntervalMs: 60_000 } });

    await writeFile(path, '{"cloud": "AzurePublicCloud", "subscriptionId": ');
    await eventually(async () => expect((await w.events('cloud config invalid')).length).toBe(1));
    const [invalid] = await w.events('cloud config invalid');
    expect(invalid).toMatchObject({ type: 'Warning', kind: 'Pod' });
    expect(invalid!.message).toContain('keeps using the previous cloud config');
    await assignOne('meanwhile', NODES.vm);
    await eventually(async () => expect(await stateOf('meanwhile-default-id-meanwhile')).toBe('Assigned'));

    // A valid file naming another principal; the old one may no longer assign this identity, so only B can.
    const bSecret = `secret-${randomUUID()}`;
    const b = w.az.emulator.registerServicePrincipal({ clientId: randomUUID(), secret: bSecret });
    // The identity lives in a resource group where only B holds Managed Identity Operator.
    const rgB = w.az.emulator.createResourceGroup('rg-b-only');
    const id = w.az.emulator.createUserAssignedIdentity('rg-b-only', 'id-b-only');
    grantClusterRoles(w.az.emulator, b.objectId, `/subscriptions/${w.az.emulator.subscriptionId}/resourceGroups/${w.rg}`, rgB.id);
    expect(w.az.emulator.checkAccess(a.objectId, 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action', id.id)).toBe(false);
    await writeFile(path, azureJsonText(w.az, { clientId: b.clientId, secret: bSecret }));
    await eventually(async () => expect((await w.events('cloud config reloaded')).length).toBe(1));
    expect((await w.events('cloud config reloaded'))[0]!.message).toContain('aadClientId');
    await w.createIdentity('id-b-only', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b-b-only', { azureIdentity: 'id-b-only', selector: 'b-only' });
    await w.createPod('b-only', NODES.vmss1, 'b-only');
    await eventually(async () => expect(await stateOf('b-only-default-id-b-only')).toBe('Assigned'));
    expect(w.vmssIds()).toContain(id.id.toLowerCase());
    const metrics = await (await fetch(mic.metricsUrl)).text();
    expect(metrics).toMatch(/aadpodidentity_mic_cloud_config_reload_count\{result="invalid"\} 1/);
    expect(metrics).toMatch(/aadpodidentity_mic_cloud_config_reload_count\{result="applied"\} 1/);
  });
});
