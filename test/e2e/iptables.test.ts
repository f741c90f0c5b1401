import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createIptables, type Iptables } from '../../src/nmi/iptables.js';
import { createNodeNetwork, leftoverNamespaces, netnsSupport, shouldSkipNetns, type NodeNetwork } from '../helpers/netns.js';

const skip = shouldSkipNetns('iptables interception');

// A stand-in for NMI inside the node namespace: answers with the caller's address, so the test sees the source IP
// survives the DNAT (NMI finds the pod by it).
const ECHO_SERVER = `
const http = require('node:http');
const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ remote: req.socket.remoteAddress, path: req.url }));
});
server.listen(Number(process.argv[1]), '127.0.0.1', () => console.log('listening'));
`;

const CALLER = `
fetch('http://169.254.169.254/metadata/identity/oauth2/token?resource=x', { headers: { Metadata: 'true' }, signal: AbortSignal.timeout(1500) })
  .then(async (r) => { console.log(JSON.stringify({ status: r.status, body: await r.json() })); })
  .catch((e) => { console.log(JSON.stringify({ error: String(e.cause?.code ?? e.name) })); })
  .finally(() => process.exit(0));
`;

describe.skipIf(skip)('iptables rules in a node network namespace', () => {
  let net: NodeNetwork;
  let ipt: Iptables;
  const nmiPort = 2579;

  beforeEach(async () => {
    expect(netnsSupport()).toEqual({ ok: true, reason: '' });
    net = await createNodeNetwork();
    ipt = createIptables(
      { metadataIp: '169.254.169.254', metadataPort: 80, nmiHost: '127.0.0.1', nmiPort },
      { commandPrefix: ['ip', 'netns', 'exec', net.nodeNs] },
    );
  });

  afterEach(async () => {
    await net?.destroy();
    expect(await leftoverNamespaces()).toEqual([]);
  });

  const nat = async (chain: string) =>
    (await net.exec(net.nodeNs, ['iptables', '-w', '5', '-t', 'nat', '-S', chain])).stdout.trim().split('\n');

  it('creates exactly the original chain and a single jump at the top of PREROUTING', async () => {
    expect(await ipt.listChain()).toBeUndefined();
    expect(await ipt.ensure()).toEqual({ createdChain: true, rewroteRules: true, fixedJump: true });
    expect(await nat('aad-metadata')).toEqual([
      '-N aad-metadata',
      '-A aad-metadata ! -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:2579',
      '-A aad-metadata -j RETURN',
    ]);
    expect((await nat('PREROUTING')).filter((l) => l.startsWith('-A'))).toEqual(['-A PREROUTING -j aad-metadata']);
    expect(await ipt.ensure()).toEqual({ createdChain: false, rewroteRules: false, fixedJump: false });
  });

  it('repairs tampered rules, a moved jump and duplicate jumps', async () => {
    await ipt.ensure();
    const iptables = (...args: string[]) => net.exec(net.nodeNs, ['iptables', '-w', '5', '-t', 'nat', ...args]);
    await iptables('-I', 'aad-metadata', '1', '-j', 'RETURN');
    await iptables('-I', 'PREROUTING', '1', '-p', 'udp', '-j', 'RETURN');
    await iptables('-A', 'PREROUTING', '-j', 'aad-metadata');
    expect(await ipt.ensure()).toEqual({ createdChain: false, rewroteRules: true, fixedJump: true });
    expect(await nat('aad-metadata')).toEqual(ipt.expectedRules());
    const prerouting = (await nat('PREROUTING')).filter((l) => l.startsWith('-A'));
    expect(prerouting[0]).toBe('-A PREROUTING -j aad-metadata');
    expect(prerouting.filter((l) => l === '-A PREROUTING -j aad-metadata')).toHaveLength(1);
  });

  it('removes the jump and the chain on cleanup, and cleanup twice is harmless', async () => {
    await ipt.ensure();
    await ipt.cleanup();
    await ipt.cleanup();
    expect(await ipt.listChain()).toBeUndefined();
    expect((await nat('PREROUTING')).filter((l) => l.includes('aad-metadata'))).toEqual([]);
  });

  it('sends a pod’s metadata traffic to NMI with its own source address, and fails closed without the rule', async () => {
    const pod = await net.addPod();
    const server = net.spawnIn(net.nodeNs, ['node', '-e', ECHO_SERVER, String(nmiPort)]);
    await new Promise<void>((resolve, reject) => {
      server.stdout?.on('data', (d: Buffer) => d.toString().includes('listening') && resolve());
      server.once('exit', (code) => reject(new Error(`echo server exited ${code}`)));
    });
    const call = async () => JSON.parse((await net.exec(pod.ns, ['node', '-e', CALLER], 10_000)).stdout.trim());

    const before = await call();
    expect(before.error).toBeDefined();

    await ipt.ensure();
    const intercepted = await call();
    expect(intercepted).toEqual({
      status: 200,
      body: { remote: pod.ip, path: '/metadata/identity/oauth2/token?resource=x' },
    });

    await ipt.cleanup();
    expect((await call()).error).toBeDefined();
  });
});
