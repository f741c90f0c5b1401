// Issue 10 rows 1 and 2, performed for real against NMI and both emulators: a namespace editor in team-b writes a
// service-principal AzureIdentity whose clientPassword names team-a's Secret (row 1), or whose adEndpoint is a host
// the attacker controls (row 2). NMI must refuse before reading the Secret or opening a connection, tell the pod
// nothing about other objects, and log why, naming the flag that would allow it.

import { randomUUID } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROUP, Plurals, VERSION } from '../../src/crds/names.js';
import { decodeToken } from '../helpers/azure.js';
import { accessTokenOf, startNmiWorld, TOKEN_PATH, VAULT, waitUntil, type NmiWorld, type WorldIdentity } from '../helpers/nmi-world.js';

const tokenPath = `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(VAULT)}`;
const VICTIM_SECRET = 'team-a-sp-credentials';

/** NMI's log lines, as JSON objects. */
function capturedLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines, text: () => lines.map((l) => JSON.stringify(l)).join('\n') };
}

/** A TCP listener on 127.0.0.1 that counts connections and closes each at once (no TLS: nothing is ever served). */
async function countingListener(): Promise<{ server: Server; port: number; connections: () => number; stop(): Promise<void> }> {
  let count = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    count++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    server,
    port: (server.address() as AddressInfo).port,
    connections: () => count,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

async function ensureNamespace(world: NmiWorld, name: string): Promise<void> {
  await world.core.createNamespace({ body: { metadata: { name } } }).catch((e: unknown) => {
    if ((e as { code?: number }).code !== 409) throw e;
  });
}

/** team-a's service principal: registered in the emulator's AAD, its client secret in team-a's Secret. */
async function victimServicePrincipal(world: NmiWorld): Promise<{ clientId: string; principalId: string }> {
  const clientId = randomUUID();
  const secret = `victim-${randomUUID()}`;
  const sp = world.azure.emulator.registerServicePrincipal({ clientId, secret });
  await ensureNamespace(world, 'team-a');
  await world.core.createNamespacedSecret({
    namespace: 'team-a',
    body: { metadata: { name: VICTIM_SECRET }, data: { clientSecret: Buffer.from(secret).toString('base64') } },
  });
  return { clientId, principalId: sp.objectId };
}

/** A type-1 AzureIdentity as the attacker writes it in their own namespace. */
async function spIdentity(
  world: NmiWorld,
  o: { namespace: string; name: string; clientId: string; secret: { namespace: string; name: string }; adEndpoint?: string },
): Promise<WorldIdentity> {
  await ensureNamespace(world, o.namespace);
  const cr = (await world.custom.createNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    plural: Plurals.AzureIdentity,
    namespace: o.namespace,
    body: {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: 'AzureIdentity',
      metadata: { name: o.name, namespace: o.namespace },
      spec: {
        type: 1,
        clientID: o.clientId,
        tenantID: world.azure.emulator.tenantId,
        adEndpoint: o.adEndpoint ?? world.azure.emulator.url,
        clientPassword: o.secret,
      },
    },
  })) as Record<string, unknown>;
  return { cr, name: o.name, namespace: o.namespace, clientId: o.clientId, principalId: '', resourceId: '' };
}

const secretReads = (world: NmiWorld, namespace: string, name: string) =>
  world.api.server.requestLog().filter((e) => e.method === 'GET' && e.path === `/api/v1/namespaces/${namespace}/secrets/${name}`);

describe('NMI keeps a service principal identity to its own namespace and to allowed authorities (defaults)', () => {
  let world: NmiWorld;
  let log: ReturnType<typeof capturedLogger>;
  let listener: Awaited<ReturnType<typeof countingListener>>;

  beforeAll(async () => {
    log = capturedLogger();
    listener = await countingListener();
    world = await startNmiWorld({ logger: log.logger });
  });
  afterAll(async () => {
    await world?.stop();
    await listener?.stop();
  });

  it("refuses team-b's identity naming team-a's Secret without ever reading it, and tells the pod nothing about it", async () => {
    const victim = await victimServicePrincipal(world);
    // team-a's own identity, with its Secret beside it, still works.
    const own = await spIdentity(world, { namespace: 'team-a', name: 'a-sp', clientId: victim.clientId, secret: { namespace: 'team-a', name: VICTIM_SECRET } });
    const victimPod = await world.pod('a-app', '127.0.2.10', { namespace: 'team-a' });
    await world.assign(victimPod, own);
    const served = await world.call(victimPod.ip, tokenPath);
    expect(served.status, served.body).toBe(200);
    expect(decodeToken(accessTokenOf(served)).appid).toBe(victim.clientId);
    expect(secretReads(world, 'team-a', VICTIM_SECRET)).toHaveLength(1);

    const stolen = await spIdentity(world, { namespace: 'team-b', name: 'b-sp', clientId: victim.clientId, secret: { namespace: 'team-a', name: VICTIM_SECRET } });
    const attacker = await world.pod('b-app', '127.0.2.11', { namespace: 'team-b' });
    await world.assign(attacker, stolen);
    world.azure.emulator.clearRequestLog();
    const reply = await world.call(attacker.ip, tokenPath);

    expect(reply.status).toBe(403);
    expect(reply.body).not.toContain('access_token');
    expect(reply.body).not.toContain(VICTIM_SECRET);
    expect(reply.body).not.toContain('team-a');
    expect(reply.body).not.toContain('clientSecret');
    // The Secret was read once, for team-a's own pod, and never for team-b's; AAD was never asked.
    expect(secretReads(world, 'team-a', VICTIM_SECRET)).toHaveLength(1);
    expect(world.azure.emulator.requestLog().filter((e) => e.operation === 'aad_token')).toEqual([]);
    // The log says why and how an admin would allow it.
    const refusal = log.lines.find((l) => l['msg'] === 'token acquisition failed' && l['namespace'] === 'team-b');
    expect(JSON.stringify(refusal)).toContain('--allow-cross-namespace-secrets');
  });

  it('answers a multi-key Secret without naming its keys to the pod', async () => {
    await ensureNamespace(world, 'team-b');
    const keyNames = ['primary-password-for-payments', 'rotated-key-2026'];
    await world.core.createNamespacedSecret({
      namespace: 'team-b',
      body: { metadata: { name: 'b-multi' }, data: Object.fromEntries(keyNames.map((k) => [k, Buffer.from(`v-${k}`).toString('base64')])) },
    });
    const id = await spIdentity(world, { namespace: 'team-b', name: 'b-multi-sp', clientId: randomUUID(), secret: { namespace: 'team-b', name: 'b-multi' } });
    const pod = await world.pod('b-multi-app', '127.0.2.12', { namespace: 'team-b' });
    await world.assign(pod, id);
    const before = log.lines.length;
    const reply = await world.call(pod.ip, tokenPath);
    expect(reply.status).toBe(503);
    for (const k of keyNames) {
      expect(reply.body).not.toContain(k);
      expect(reply.body).not.toContain(`v-${k}`);
    }
    expect(reply.body).not.toContain('b-multi\n');
    expect(reply.body).toContain("the identity's credential cannot be used");
    // The log names the Secret (the identity's own namespace) and the key count, never key names or values.
    const lines = JSON.stringify(log.lines.slice(before));
    expect(lines).toContain('team-b/b-multi');
    for (const k of keyNames) expect(lines).not.toContain(k);
  });

  it("opens no connection to an adEndpoint that is not an allowed authority, and reads no Secret for it", async () => {
    const clientId = randomUUID();
    await ensureNamespace(world, 'team-b');
    await world.core.createNamespacedSecret({
      namespace: 'team-b',
      body: { metadata: { name: 'b-evil-secret' }, data: { clientSecret: Buffer.from('s').toString('base64') } },
    });
    const evil = `https://127.0.0.1:${listener.port}`;
    const id = await spIdentity(world, { namespace: 'team-b', name: 'b-evil', clientId, secret: { namespace: 'team-b', name: 'b-evil-secret' }, adEndpoint: evil });
    const pod = await world.pod('b-evil-app', '127.0.2.13', { namespace: 'team-b' });
    await world.assign(pod, id);
    const reply = await world.call(pod.ip, tokenPath);
    expect(reply.status).toBe(403);
    expect(reply.body).not.toContain('access_token');
    expect(listener.connections()).toBe(0);
    expect(secretReads(world, 'team-b', 'b-evil-secret')).toEqual([]);
    const refusal = log.lines.find((l) => l['msg'] === 'token acquisition failed' && JSON.stringify(l).includes('b-evil'));
    expect(JSON.stringify(refusal)).toContain('--allowed-ad-endpoints');
  });
});

describe('NMI with the admin flags that allow what the defaults refuse', () => {
  let world: NmiWorld;
  let listener: Awaited<ReturnType<typeof countingListener>>;

  beforeAll(async () => {
    listener = await countingListener();
    world = await startNmiWorld({
      nmi: { allowCrossNamespaceSecrets: true, allowedAdEndpoints: [`https://127.0.0.1:${listener.port}/`] },
    });
  });
  afterAll(async () => {
    await world?.stop();
    await listener?.stop();
  });

  it('reads a Secret of another namespace with --allow-cross-namespace-secrets', async () => {
    const victim = await victimServicePrincipal(world);
    const shared = await spIdentity(world, { namespace: 'team-b', name: 'b-sp', clientId: victim.clientId, secret: { namespace: 'team-a', name: VICTIM_SECRET } });
    const pod = await world.pod('b-app', '127.0.2.21', { namespace: 'team-b' });
    await world.assign(pod, shared);
    const reply = await world.call(pod.ip, tokenPath);
    expect(reply.status, reply.body).toBe(200);
    expect(decodeToken(accessTokenOf(reply)).oid).toBe(victim.principalId);
    expect(secretReads(world, 'team-a', VICTIM_SECRET)).toHaveLength(1);
  });

  it('connects to an adEndpoint on --allowed-ad-endpoints', async () => {
    await ensureNamespace(world, 'team-b');
    await world.core.createNamespacedSecret({
      namespace: 'team-b',
      body: { metadata: { name: 'b-custom-secret' }, data: { clientSecret: Buffer.from('s').toString('base64') } },
    });
    // Not spelt as on the flag (a path here, a trailing slash there): the same origin is what counts.
    const id = await spIdentity(world, {
      namespace: 'team-b', name: 'b-custom', clientId: randomUUID(), secret: { namespace: 'team-b', name: 'b-custom-secret' },
      adEndpoint: `https://127.0.0.1:${listener.port}/custom/`,
    });
    const pod = await world.pod('b-custom-app', '127.0.2.22', { namespace: 'team-b' });
    await world.assign(pod, id);
    const reply = world.call(pod.ip, tokenPath);
    await waitUntil(() => listener.connections() > 0, 'a connection to the allowed authority', 15_000);
    // The listener speaks no TLS: the acquisition fails as unreachable, after the SDK's retries.
    expect((await reply).status).toBe(503);
  }, 30_000);
});
