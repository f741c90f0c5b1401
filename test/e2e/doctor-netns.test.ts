// doctor on the netns sandbox (root, real iptables in each node's namespace): healthy it sees the aad-metadata
// chain in place on every node (NMI's /status checks it live); with the chain deleted behind NMI's back (as a
// flush of the nat table would), it names the node, exits 1 and prints the fix.

import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shouldSkipNetns } from '../helpers/netns.js';
import { REPO_ROOT, startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';

const skip = shouldSkipNetns('doctor on the netns sandbox');

function doctor(stateDir: string): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'cmd', 'doctor.ts'), '--sandbox', stateDir], { cwd: REPO_ROOT, timeout: 90_000, encoding: 'utf8' }, (error, stdout) => {
      resolve({ code: error ? Number((error as { code?: unknown }).code ?? -1) : 0, stdout });
    });
  });
}

describe.skipIf(skip)('doctor on the netns sandbox', () => {
  let t: TestSandbox;

  beforeAll(async () => {
    // NMI repairs its rules every --ipt-update-interval-sec; a long one leaves the deleted chain missing for the check.
    t = await startTestSandbox({ network: 'netns', nodes: 2, mic: { replicas: 1 }, nmi: { args: ['--ipt-update-interval-sec=600'] } });
  }, 120_000);

  afterAll(async () => {
    await t?.stop();
  }, 60_000);

  it('sees the rules in place on every node, then a node whose chain is gone: exit 1 with the fix', async () => {
    const healthy = await doctor(t.sandbox.stateDir);
    if (process.env.DOCTOR_PRINT) console.log(healthy.stdout);
    expect(healthy.code, healthy.stdout).toBe(0);
    for (const node of t.sandbox.endpoints.nodes) expect(healthy.stdout).toContain(`✓ node ${node.name}: iptables chain aad-metadata in place`);

    const node = t.sandbox.endpoints.nodes[1]!.name;
    for (const args of [['-D', 'PREROUTING', '-j', 'aad-metadata'], ['-F', 'aad-metadata'], ['-X', 'aad-metadata']]) {
      const r = await t.sandbox.execInNode(node, ['iptables', '-w', '5', '-t', 'nat', ...args]);
      expect(r.code, r.stderr).toBe(0);
    }
    const broken = await doctor(t.sandbox.stateDir);
    if (process.env.DOCTOR_PRINT) console.log(broken.stdout);
    expect(broken.code, broken.stdout).toBe(1);
    expect(broken.stdout).toContain(`✗ node ${node}: iptables chain aad-metadata missing or not as NMI makes it: pods' metadata traffic is not intercepted`);
    expect(broken.stdout).toContain(`kubectl delete pod -n kube-system nmi-${node}   # NMI rewrites the rules at start`);
    expect(broken.stdout).toContain(`✓ node ${t.sandbox.endpoints.nodes[0]!.name}: iptables chain aad-metadata in place`);

    // What the fix does: NMI restarted writes its rules again.
    await t.sandbox.restartNmi(node);
    const repaired = await doctor(t.sandbox.stateDir);
    expect(repaired.code, repaired.stdout).toBe(0);
  }, 180_000);
});
