// The explain command against the API emulator, with MIC running for real: what MIC's plan will do before it runs,
// and what NMI answers a request naming an identity (--client-id) once the identity is Assigned.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { explainCli } from '../../cmd/lib/explain-cli.js';
import { eventually, NODES, startMicWorld, type MicWorld } from './mic-world.js';

let w: MicWorld;
let dir: string;
beforeEach(async () => {
  w = await startMicWorld();
  dir = mkdtempSync(join(tmpdir(), 'explain-'));
});
afterEach(async () => {
  await w?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function run(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await explainCli(args, { env: {}, stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

describe('explain (CLI) against a cluster where MIC runs', () => {
  it("prints MIC's next steps from its own plan, then NMI's answer to a request naming an identity by client_id", async () => {
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(kubeconfig, w.api.server.kubeconfigYaml);
    const id = w.msi('id1');
    await w.createIdentity('id1', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b1', { azureIdentity: 'id1', selector: 'app1' });
    await w.createPod('p1', NODES.vmss0, 'app1');
    await w.core.patchNamespacedPodStatus({
      namespace: 'default',
      name: 'p1',
      body: [{ op: 'add', path: '/status', value: { phase: 'Running', podIP: '10.0.0.9', podIPs: [{ ip: '10.0.0.9' }] } }],
    });

    const before = await run(['--kubeconfig', kubeconfig, 'default/p1']);
    expect(before.code, before.stderr).toBe(3);
    expect(before.stdout).toContain('  next: create AzureAssignedIdentity default/p1-default-id1 (Created)');
    expect(before.stdout).toContain(`  next: attach ${id.id.toLowerCase()} to VMSS ss1`);

    await w.startMic();
    await eventually(async () => expect((await w.assigned()).find((a) => a.name === 'p1-default-id1')?.state).toBe('Assigned'));
    const byId = await run(['--kubeconfig', kubeconfig, '--client-id', id.clientId.toUpperCase(), 'default/p1']);
    expect(byId.code, byId.stderr).toBe(0);
    expect(byId.stdout).toContain(`NMI now: 200 with a token for default/id1 (asked by client_id ${id.clientId.toUpperCase()})`);
    expect(byId.stdout).not.toContain('  next: ');

    const other = await run(['--kubeconfig', kubeconfig, '--client-id', '0badc0de-0000-4000-8000-000000000001', 'default/p1']);
    expect(other.code).toBe(3);
    expect(other.stdout).toContain('NMI now: 400 Identity not found, at once');

    const two = await run(['--kubeconfig', kubeconfig, '--client-id', id.clientId, '--msi-res-id', id.id, 'default/p1']);
    expect(two.code).toBe(2);
    expect(two.stderr).toContain('give at most one of --client-id, --msi-res-id, --object-id');
  }, 60_000);
});
