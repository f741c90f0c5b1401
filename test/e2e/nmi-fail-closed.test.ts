// Attack row 9 (issue 10): SIGTERM to NMI must not open the node's IMDS to pods. The real NMI (cmd/nmi.ts) runs in a
// node namespace of the test's own, next to the API emulator and a stand-in "real IMDS" that owns the metadata
// address inside that namespace (nothing leaves it: no route out). A pod namespace then calls the metadata address.

import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lineFrom as waitForLine } from '../helpers/child-lines.js';
import { createNodeNetwork, leftoverNamespaces, shouldSkipNetns, type NodeNetwork, type PodNetns } from '../helpers/netns.js';

const skip = shouldSkipNetns('NMI fails closed on exit');
const ROOT = join(import.meta.dirname, '..', '..');
const METADATA_IP = '169.254.169.254';

// Answers every request with a marker and counts who asked, so the test sees whether a pod ever got through.
const STAND_IN_IMDS = `
const http = require('node:http');
const hits = [];
http.createServer((req, res) => {
  if (req.url === '/__hits') return res.end(JSON.stringify(hits));
  hits.push(req.socket.remoteAddress);
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ realImds: true, access_token: 'node-identity-token' }));
}).listen(80, '${METADATA_IP}', () => console.log('listening'));
`;

const CALLER = `
fetch('http://${METADATA_IP}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net', { headers: { Metadata: 'true' }, signal: AbortSignal.timeout(3000) })
  .then(async (r) => { console.log(JSON.stringify({ status: r.status, body: await r.text() })); })
  .catch((e) => { console.log(JSON.stringify({ error: String(e.cause?.code ?? e.name) })); })
  .finally(() => process.exit(0));
`;

describe.skipIf(skip)('NMI stopping (attack row 9)', () => {
  let net: NodeNetwork;
  let pod: PodNetns;
  const work = mkdtempSync(join(ROOT, '.tmp-fail-closed-'));
  const kubeconfig = join(work, 'kubeconfig');

  const lineFrom = (child: ChildProcess, match: (line: string) => boolean, what: string) => waitForLine(child, match, what, 60_000);
  const podCall = async () => JSON.parse((await net.exec(pod.ns, ['node', '-e', CALLER], 15_000)).stdout.trim());
  const chain = async () => {
    const r = await net.exec(net.nodeNs, ['iptables', '-w', '5', '-t', 'nat', '-S']);
    return r.stdout.split('\n').filter((l) => l.includes('aad-metadata'));
  };
  const podHits = async () => {
    const r = await net.exec(net.nodeNs, ['node', '-e', `fetch('http://${METADATA_IP}/__hits').then(r => r.text()).then(t => console.log(t))`]);
    return (JSON.parse(r.stdout.trim()) as string[]).filter((ip) => ip === pod.ip).length;
  };
  const until = async <T>(check: () => Promise<T | undefined>, what: string): Promise<T> => {
    for (let i = 0; i < 200; i++) {
      const v = await check();
      if (v !== undefined) return v;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${what} not reached`);
  };

  beforeAll(async () => {
    net = await createNodeNetwork();
    pod = await net.addPod();
    // The metadata address belongs to the node namespace here, as the link-local IMDS is reachable from a real node.
    expect((await net.exec(net.nodeNs, ['ip', 'addr', 'add', `${METADATA_IP}/32`, 'dev', 'lo'])).code).toBe(0);
    await lineFrom(net.spawnIn(net.nodeNs, ['node', '-e', STAND_IN_IMDS]), (l) => l.includes('listening'), 'stand-in IMDS');
    const api = net.spawnIn(net.nodeNs, [
      process.execPath, '--import', 'tsx', join(ROOT, 'cmd/apiserver.ts'), '--crd-dir', join(ROOT, 'config/crd'), '--kubeconfig-out', kubeconfig,
    ]);
    await lineFrom(api, (l) => l.includes('"ready"'), 'apiserver');
  }, 90_000);

  afterAll(async () => {
    await net?.destroy();
    rmSync(work, { recursive: true, force: true });
    expect(await leftoverNamespaces()).toEqual([]);
  });

  it('keeps the DNAT on SIGTERM so pods are refused, never served by the real IMDS, until --uninstall-iptables', async () => {
    // Without interception the pod reaches the stand-in: the check below would see an attack that worked.
    expect(JSON.parse((await podCall()).body ?? '{}')).toMatchObject({ realImds: true });
    expect(await podHits()).toBe(1);

    const nmiArgv = [process.execPath, '--import', 'tsx', join(ROOT, 'cmd/nmi.ts'), '--node=node-1', `--kubeconfig=${kubeconfig}`,
      '--allow-network-plugin-kubenet', '--http-probe-port=8085', '--prometheus-port=9090', '--log-format=json', '--startup-taint='];
    const nmi = net.spawnIn(net.nodeNs, nmiArgv);
    await lineFrom(nmi, (l) => l.includes('"ready"'), 'nmi');
    await until(async () => ((await chain()).length === 4 ? true : undefined), 'interception rules in place');
    const served = await podCall();
    expect(served.status).not.toBe(200);
    expect(served.body).not.toContain('realImds');

    const exited = new Promise<number | null>((r) => nmi.once('exit', (code) => r(code)));
    nmi.kill('SIGTERM');
    expect(await exited).toBe(0);

    // The attack: with NMI gone, the pod asks again. It must be refused, and the stand-in must not see it.
    for (let i = 0; i < 3; i++) expect(await podCall()).toEqual({ error: 'ECONNREFUSED' });
    expect(await podHits()).toBe(1);
    expect(await chain()).toHaveLength(4);

    const uninstall = await net.exec(net.nodeNs, [...nmiArgv.slice(0, 4), '--uninstall-iptables'], 60_000);
    expect(uninstall.code, uninstall.stderr).toBe(0);
    const result = uninstall.stdout.split('\n').find((l) => l.startsWith('{"uninstalled"')) ?? '{}';
    expect(JSON.parse(result)).toEqual({ uninstalled: true, chain: 'aad-metadata', existed: true });
    expect(await chain()).toEqual([]);
    // Uninstalled on purpose: interception is gone (what the uninstall step is for).
    expect(JSON.parse((await podCall()).body ?? '{}')).toMatchObject({ realImds: true });
  }, 120_000);
});
