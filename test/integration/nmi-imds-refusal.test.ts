// Issue 11 items 9 and 10: an identity the pod is not bound to is refused the way IMDS refuses it (400
// `Identity not found`, at once) once the pod's assignments are settled, so clients that retry 404s (azure-identity
// for Python, DefaultAzureCredential, `az login --identity --username`) stop at once; `object_id` selects the pod's
// own identity by its principal ID. NMI runs with the original's waits (16 x 5 s: an 80 s window), so any request
// that waited would take over a minute.

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeToken } from '../helpers/azure.js';
import { accessTokenOf, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type Reply, type WorldIdentity, type WorldPod } from '../helpers/nmi-world.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ORIGINAL_WAITS = { retryAttemptsForCreated: 16, retryAttemptsForAssigned: 4, findIdentityRetryIntervalMs: 5_000 } as const;
const WINDOW_MS = ORIGINAL_WAITS.retryAttemptsForCreated * ORIGINAL_WAITS.findIdentityRetryIntervalMs;
const IDENTITY_NOT_FOUND = '{"error":"invalid_request","error_description":"Identity not found"}';

const tokenPath = (extra = '') => `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(VAULT)}${extra}`;

/**
 * What azure-identity for Python does against IMDS: retry 404, 410, 429 and 5xx up to 5 times, sleeping
 * 2 * 2^(n-1) s between attempts (retry_backoff_factor 2, max 60 s). Against an 80 s wait per 404 that was 9 minutes.
 */
async function pythonLikeGetToken(world: NmiWorld, ip: string, path: string): Promise<{ reply: Reply; attempts: number; elapsedMs: number }> {
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    const reply = await world.call(ip, path);
    const retryable = reply.status === 404 || reply.status === 410 || reply.status >= 429;
    if (!retryable || attempt === 6) return { reply, attempts: attempt, elapsedMs: Date.now() - started };
    await new Promise((r) => setTimeout(r, Math.min(60_000, 2_000 * 2 ** (attempt - 1))));
  }
}

function expectIdentityNotFound(reply: Reply): void {
  expect(reply.status, reply.body).toBe(400);
  expect(reply.body).toBe(IDENTITY_NOT_FOUND);
  expect(reply.headers['content-type']).toBe('application/json; charset=utf-8');
}

describe('NMI refuses an identity the pod is not bound to as IMDS does', () => {
  let world: NmiWorld;
  let mine: WorldIdentity;
  let theirs: WorldIdentity;
  let unbound: WorldIdentity;
  let app: WorldPod;

  beforeAll(async () => {
    world = await startNmiWorld({ nmi: ORIGINAL_WAITS });
    mine = await world.managedIdentity('mine');
    theirs = await world.managedIdentity('theirs');
    unbound = await world.managedIdentity('unbound');
    app = await world.pod('app', '127.0.3.11');
    await world.assign(app, mine);
    await world.assign(await world.pod('neighbour', '127.0.3.12'), theirs);
  });
  afterAll(async () => {
    await world?.stop();
  });

  it('answers a Python-like retrying client once, at once, with 400 Identity not found for every unbound selector', async () => {
    world.azure.emulator.clearRequestLog();
    const cases = [
      [`&client_id=${unbound.clientId}`, 'an identity no binding names'],
      [`&client_id=${theirs.clientId}`, "the neighbour's client id"],
      [`&msi_res_id=${encodeURIComponent(theirs.resourceId)}`, "the neighbour's resource id"],
      [`&object_id=${theirs.principalId}`, "the neighbour's object id"],
      ['&object_id=00000000-0000-0000-0000-000000000000', 'an unknown object id'],
    ] as const;
    for (const [extra, what] of cases) {
      const { reply, attempts, elapsedMs } = await pythonLikeGetToken(world, app.ip, tokenPath(extra));
      console.log(`refusal of ${what}: ${attempts} request(s), ${elapsedMs} ms (the original: 6 x ${WINDOW_MS / 1000} s + backoff)`);
      expectIdentityNotFound(reply);
      expect(attempts, what).toBe(1);
      // Far inside one wait window: nothing waited.
      expect(elapsedMs, what).toBeLessThan(WINDOW_MS / 8);
    }
    // To match the object ids NMI read only the pod's own identity's token; never one of another identity.
    const imds = world.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token');
    expect(imds.every((e) => e.target.endsWith(`:${mine.clientId}`)), JSON.stringify(imds.map((e) => e.target))).toBe(true);
  }, 30_000);

  it('serves the pod its own identity by object_id (and by client id and resource id as before)', async () => {
    for (const extra of [`&object_id=${mine.principalId}`, `&object_id=${mine.principalId.toUpperCase()}`, `&client_id=${mine.clientId}`, '']) {
      const reply = await world.call(app.ip, tokenPath(extra));
      expect(reply.status, reply.body).toBe(200);
      const claims = decodeToken(accessTokenOf(reply));
      expect(claims.oid).toBe(mine.principalId);
      expect(claims.appid).toBe(mine.clientId);
    }
  });

  it('lets `az login --identity --username <object id>` through: the ID refused at once as a client_id, then served as object_id', async () => {
    const started = Date.now();
    expectIdentityNotFound(await world.call(app.ip, tokenPath(`&client_id=${mine.principalId}`)));
    const asObject = await world.call(app.ip, tokenPath(`&object_id=${mine.principalId}`));
    expect(asObject.status, asObject.body).toBe(200);
    expect(decodeToken(accessTokenOf(asObject)).oid).toBe(mine.principalId);
    expect(Date.now() - started).toBeLessThan(WINDOW_MS / 8);
  });

  it('lets a real ManagedIdentityCredential fail at once on an unbound client id, so a credential chain moves on', async () => {
    // The SDK's source address is 127.0.0.1 (see nmi-sdk.test.ts): that pod is bound to `mine` only.
    const sdkPod = await world.pod('sdk-app', '127.0.0.1');
    await world.assign(sdkPod, mine);
    const out = await runSdkChild({
      AZURE_POD_IDENTITY_AUTHORITY_HOST: world.nmiUrl,
      UNBOUND_CLIENT_ID: unbound.clientId,
      OWN_CLIENT_ID: mine.clientId,
      OWN_OBJECT_ID: mine.principalId,
    });
    console.log(`ManagedIdentityCredential refused the unbound client id in ${out.refusedMs} ms (${out.refusal})`);
    expect(out.refusal).toMatch(/Identity not found/);
    expect(out.refusedMs).toBeLessThan(WINDOW_MS / 8);
    expect(decodeToken(out.chained).appid).toBe(mine.clientId);
    expect(decodeToken(out.byObjectId).oid).toBe(mine.principalId);
  }, 60_000);

  it("gives an excepted pod the node's identity by object_id, never one an AzureIdentity declares", async () => {
    await world.exception('node-agents', 'default', { app: 'node-agent' });
    const agent = await world.pod('agent', '127.0.3.31', { labels: { app: 'node-agent' } });
    const nodeOnly = await world.managedIdentity('node-only', { declare: false });
    const served = await world.call(agent.ip, tokenPath(`&object_id=${nodeOnly.principalId}`));
    expect(served.status, served.body).toBe(200);
    expect(decodeToken(accessTokenOf(served)).oid).toBe(nodeOnly.principalId);
    const refused = await world.call(agent.ip, tokenPath(`&object_id=${mine.principalId}`));
    expect(refused.status).not.toBe(200);
    expect(refused.body).not.toContain('access_token');
  });

  it('still waits for a pod that just started: its assignment arrives during the wait and it gets the token', async () => {
    const late = await world.managedIdentity('late');
    const young = await world.pod('young', '127.0.3.21');
    const binding = await world.binding('late-binding', late, 'young');
    const sent = Date.now();
    const asked = world.call(young.ip, tokenPath(`&client_id=${late.clientId}`));
    // MIC's work, as it happens: the AAI is written Created, then Assigned once ARM has attached the identity.
    const name = await world.assign(young, late, 'Created', binding);
    await world.setAssignedState(name, 'Assigned');
    const assignedAt = Date.now();
    const reply = await asked;
    expect(reply.status, reply.body).toBe(200);
    expect(decodeToken(accessTokenOf(reply)).appid).toBe(late.clientId);
    // It could only have been answered 200 once the AAI was Assigned, well inside the window.
    expect(Date.now()).toBeGreaterThanOrEqual(assignedAt);
    expect(Date.now() - sent).toBeLessThan(WINDOW_MS / 8);
    // Now settled: another identity for the same pod is refused at once.
    const started = Date.now();
    expectIdentityNotFound(await world.call(young.ip, tokenPath(`&client_id=${unbound.clientId}`)));
    expect(Date.now() - started).toBeLessThan(WINDOW_MS / 8);
  }, 30_000);
});

const CHILD = `
import { ChainedTokenCredential, ManagedIdentityCredential } from '@azure/identity';
const started = Date.now();
let refusal = '';
try {
  await new ManagedIdentityCredential({ clientId: process.env.UNBOUND_CLIENT_ID }).getToken('https://vault.azure.net/.default');
} catch (error) {
  refusal = String(error && error.message).split('\\n')[0];
}
const refusedMs = Date.now() - started;
const chain = new ChainedTokenCredential(
  new ManagedIdentityCredential({ clientId: process.env.UNBOUND_CLIENT_ID }),
  new ManagedIdentityCredential({ clientId: process.env.OWN_CLIENT_ID }),
);
const chained = (await chain.getToken('https://storage.azure.com/.default')).token;
const byObjectId = (await new ManagedIdentityCredential({ objectId: process.env.OWN_OBJECT_ID }).getToken('https://management.azure.com/.default')).token;
process.stdout.write(JSON.stringify({ refusal, refusedMs, chained, byObjectId }));
`;

function runSdkChild(env: Record<string, string>): Promise<{ refusal: string; refusedMs: number; chained: string; byObjectId: string }> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(AZURE_|IDENTITY_|MSI_|IMDS_)/.test(k))) as Record<string, string>;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', CHILD], { cwd: ROOT, env: { ...clean, ...env }, timeout: 50_000 }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`SDK child failed: ${stderr || error.message}`, { cause: error }));
      resolve(JSON.parse(stdout) as { refusal: string; refusedMs: number; chained: string; byObjectId: string });
    });
  });
}
