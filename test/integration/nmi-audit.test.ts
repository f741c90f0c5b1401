// Issue 14 item 5: NMI's audit trail, against both emulators. Every token served and every refusal leaves a record
// (pod, uid, identity, decision path or refusal reason, cache hit or miss, latency, resource); cache hits are counted
// into one record per flush; and no record ever holds a token, a JWT, a client secret or an Authorization header.

import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/common/log.js';
import { accessTokenOf, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld } from '../helpers/nmi-world.js';
import { MAX_IMMEDIATE_REFUSALS_PER_CALLER, type AuditMode } from '../../src/nmi/audit.js';

const tokenPath = (extra = '', resource = VAULT) => `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(resource)}${extra}`;

interface AuditRecord {
  readonly audit: true;
  readonly msg: string;
  readonly decision: 'issued' | 'refused';
  readonly status: number;
  readonly reason?: string;
  readonly path?: string;
  readonly cache?: 'hit' | 'miss';
  readonly pod?: { namespace: string; name: string; uid: string };
  readonly identity?: { namespace: string; name: string; clientID: string; resourceID: string };
  readonly resource: string;
  readonly remote?: string;
  readonly requested?: { clientId?: string; resourceId?: string; objectId?: string };
  readonly count: number;
  readonly latencyMs: number;
  readonly latencyMaxMs?: number;
  readonly truncated?: true;
}

let world: NmiWorld | undefined;
afterEach(async () => {
  await world?.stop();
  world = undefined;
});

/** A world whose NMI writes its audit records, through the production logger (redaction included), into `lines`. */
async function auditedWorld(mode: AuditMode, opts: Parameters<typeof startNmiWorld>[0] = {}) {
  const lines: string[] = [];
  const auditLogger = createLogger({ format: 'json', base: { app: 'nmi', audit: true }, destination: { write: (line: string) => void lines.push(line) } });
  const w = (world = await startNmiWorld({ ...opts, nmi: { ...opts.nmi, auditLog: mode, auditFlushIntervalMs: 60_000, auditLogger } }));
  const records = () => lines.map((l) => JSON.parse(l) as AuditRecord);
  return { w, lines, records };
}

describe('NMI audit trail (issue 14 item 5)', () => {
  it('aggregate: a binding issuance from upstream is its own record; cache hits are counted into one record at the flush', async () => {
    const { w, records } = await auditedWorld('aggregate');
    const id = await w.managedIdentity('orders-id');
    const pod = await w.pod('orders', '127.0.1.41');
    await w.assign(pod, id);

    expect((await w.call(pod.ip, tokenPath())).status).toBe(200);
    const [miss] = records();
    expect(miss).toMatchObject({
      audit: true,
      msg: 'token audit',
      decision: 'issued',
      status: 200,
      path: 'binding',
      cache: 'miss',
      count: 1,
      pod: { namespace: 'default', name: 'orders', uid: pod.uid },
      identity: { namespace: 'default', name: 'orders-id', resourceID: id.resourceId },
      resource: VAULT,
    });
    expect(miss?.latencyMs).toBeGreaterThan(0);
    // The client ID is shortened as in every NMI log line; the resource ID names the identity in full.
    expect(miss?.identity?.clientID).toContain('##### REDACTED #####');

    const agent = w.agentFor(pod.ip, 4);
    const hits = 25;
    await Promise.all(
      Array.from({ length: hits }, async () => {
        const res = await agent.request({ origin: w.nmiUrl, path: tokenPath(), method: 'GET', headers: { Metadata: 'true' } });
        await res.body.dump();
        expect(res.statusCode).toBe(200);
      }),
    );
    // Hits write nothing per request...
    expect(records()).toHaveLength(1);
    w.nmi!.audit.flush();
    // ...and one record with their count at the flush.
    const counted = records().slice(1);
    expect(counted).toHaveLength(1);
    expect(counted[0]).toMatchObject({ decision: 'issued', path: 'binding', cache: 'hit', count: hits, pod: { uid: pod.uid }, identity: { name: 'orders-id' }, resource: VAULT });
    expect(counted[0]?.latencyMaxMs).toBeGreaterThanOrEqual(counted[0]?.latencyMs ?? Infinity);
    // Nothing counted since: an empty flush writes nothing.
    w.nmi!.audit.flush();
    expect(records()).toHaveLength(2);
  });

  it('all: every request is its own record, the warm path too', async () => {
    const { w, records } = await auditedWorld('all');
    const id = await w.managedIdentity('all-id');
    const pod = await w.pod('every', '127.0.1.42');
    await w.assign(pod, id);
    for (let i = 0; i < 3; i++) expect((await w.call(pod.ip, tokenPath())).status).toBe(200);
    expect(records().map((r) => [r.cache, r.count])).toEqual([
      ['miss', 1],
      ['hit', 1],
      ['hit', 1],
    ]);
    expect(records().every((r) => r.pod?.uid === pod.uid && r.path === 'binding')).toBe(true);
  });

  it('off: no record at all', async () => {
    const { w, lines } = await auditedWorld('off');
    const id = await w.managedIdentity('quiet-id');
    const pod = await w.pod('quiet', '127.0.1.43');
    await w.assign(pod, id);
    expect((await w.call(pod.ip, tokenPath())).status).toBe(200);
    expect((await w.call('127.0.1.249', tokenPath())).status).toBe(500);
    w.nmi!.audit.flush();
    expect(lines).toEqual([]);
  });

  it('records the node path (exception) and its refusal of a declared identity, with the pod and the reason', async () => {
    const { w, records } = await auditedWorld('aggregate', { systemAssigned: true });
    const declared = await w.managedIdentity('declared-id');
    await w.exception('agents', 'default', { app: 'agent' });
    const agent = await w.pod('agent', '127.0.1.44', { labels: { app: 'agent' } });

    expect((await w.call(agent.ip, tokenPath())).status).toBe(200);
    expect((await w.call(agent.ip, tokenPath())).status).toBe(200);
    // The pod gets IMDS's "Identity not found"; the audit keeps why.
    expect((await w.call(agent.ip, tokenPath(`&client_id=${declared.clientId}`))).status).toBe(400);
    w.nmi!.audit.flush();
    const mine = records().filter((r) => r.pod?.uid === agent.uid);
    expect(mine.map((r) => [r.decision, r.path, r.cache ?? '', r.reason ?? '', r.count])).toEqual([
      ['issued', 'exception', 'miss', '', 1],
      ['issued', 'exception', 'hit', '', 1],
      ['refused', 'exception', '', 'node-path-declared-identity', 1],
    ]);
    expect(mine[2]).toMatchObject({ status: 400, pod: { namespace: 'default', name: 'agent' } });
  });

  it('records refusals with their reason: unknown caller, no identity assigned, bad request, missing Metadata header, namespace policy', async () => {
    const { w, records } = await auditedWorld('aggregate', { nmi: { namespaceIdentityPolicy: 'enforce' } });
    // Labelled, nothing bound yet: the original's wait, then 404.
    const unbound = await w.pod('unbound', '127.0.1.45', { labels: { aadpodidbinding: 'not-yet' } });
    expect((await w.call('127.0.1.250', tokenPath())).status).toBe(500);
    expect((await w.call(unbound.ip, tokenPath())).status).toBe(404);
    expect((await w.call(unbound.ip, `${TOKEN_PATH}?api-version=2018-02-01`)).status).toBe(400);
    expect((await w.call(unbound.ip, tokenPath(), { headers: {} })).status).toBe(400);
    // A bound identity the namespaces do not permit (no annotation: nothing is permitted under enforce).
    const id = await w.managedIdentity('unpermitted-id');
    const pod = await w.pod('unpermitted', '127.0.1.46');
    await w.assign(pod, id);
    expect((await w.call(pod.ip, tokenPath())).status).toBe(403);

    const byReason = new Map(records().map((r) => [r.reason, r]));
    expect(byReason.get('unknown-caller')).toMatchObject({ decision: 'refused', status: 500, remote: '127.0.1.250', resource: VAULT });
    expect(byReason.get('unknown-caller')?.pod).toBeUndefined();
    expect(byReason.get('not-assigned')).toMatchObject({ status: 404, pod: { name: 'unbound', uid: unbound.uid } });
    expect(byReason.get('bad-request')).toMatchObject({ status: 400, remote: unbound.ip });
    expect(byReason.get('metadata-header-missing')).toMatchObject({ status: 400 });
    expect(byReason.get('namespace-policy')).toMatchObject({
      status: 403,
      path: 'binding',
      pod: { name: 'unpermitted', uid: pod.uid },
      identity: { namespace: 'default', name: 'unpermitted-id' },
    });
  });

  it("records IMDS's 400 for an identity the pod is not bound to (unbound), with what the pod asked for", async () => {
    const { w, records } = await auditedWorld('aggregate');
    const id = await w.managedIdentity('bound-id');
    const pod = await w.pod('asks-other', '127.0.1.49');
    await w.assign(pod, id);
    expect((await w.call(pod.ip, tokenPath())).status).toBe(200);
    const other = '0b5c2a46-7d7e-4a59-9b1e-3f6c1d2e8a90';
    const reply = await w.call(pod.ip, tokenPath(`&client_id=${other}`));
    expect(reply.status, reply.body).toBe(400);
    expect(records().find((r) => r.reason === 'unbound')).toMatchObject({
      decision: 'refused',
      status: 400,
      pod: { name: 'asks-other', uid: pod.uid },
      requested: { clientId: '0b5c##### REDACTED #####8a90' },
      resource: VAULT,
    });
  });

  it('aggregate: a repeated refusal is written once at once, then counted', async () => {
    const { w, records } = await auditedWorld('aggregate');
    for (let i = 0; i < 3; i++) expect((await w.call('127.0.1.251', tokenPath())).status).toBe(500);
    expect(records()).toHaveLength(1);
    w.nmi!.audit.flush();
    expect(records().map((r) => [r.reason, r.count])).toEqual([
      ['unknown-caller', 1],
      ['unknown-caller', 2],
    ]);
  });

  it('aggregate: pods sending distinct refusals with long resource and client_id values cannot grow what the window holds (flushed early)', async () => {
    // Attack: every distinct (resource, client_id) is a new key held until the flush; at 2048 characters each,
    // 16,384 keys (the key cap) held ~140 MB in one window. The characters held are capped too. (One pod alone is
    // held to MAX_IMMEDIATE_REFUSALS_PER_CALLER keys: the flood comes from several pods, each under that cap.)
    const { w, records } = await auditedWorld('aggregate');
    const id = await w.managedIdentity('flood-id');
    const pod = await w.pod('flooder', '127.0.1.50');
    await w.assign(pod, id);
    const first = tokenPath('&client_id=0b5c2a46-7d7e-4a59-9b1e-3f6c1d2e8a90');
    for (let i = 0; i < 2; i++) expect((await w.call(pod.ip, first)).status).toBe(400);
    // The repeat is counted, not written.
    expect(records().filter((r) => r.reason === 'unbound')).toHaveLength(1);
    const flooders = [];
    for (let i = 0; i < 6; i++) {
      const p = await w.pod(`flooder-${i}`, `127.0.1.${60 + i}`);
      await w.assign(p, id);
      flooders.push(w.agentFor(p.ip, 8));
    }
    const long = 'x'.repeat(2000);
    const distinct = 300; // 300 × ~4,000 characters: far below the key cap, above the character cap
    for (let batch = 0; batch < distinct; batch += 50) {
      const agent = flooders[batch / 50]!;
      await Promise.all(
        Array.from({ length: 50 }, async (_, j) => {
          const n = String(batch + j).padStart(6, '0');
          const path = tokenPath(`&client_id=${long}${n}`, `https://${long}${n}.example`);
          const res = await agent.request({ origin: w.nmiUrl, path, method: 'GET', headers: { Metadata: 'true' } });
          await res.body.dump();
          expect(res.statusCode).toBe(400);
        }),
      );
    }
    // No flush was asked for: the window was flushed early, writing the counted repeat.
    expect(records().filter((r) => r.reason === 'unbound' && r.resource === VAULT).map((r) => r.count)).toEqual([1, 1]);
  });

  it("aggregate: a pod flooding distinct unbound requests with long values gets a bounded share of the node's log; another pod's records are intact", async () => {
    // Attack: each distinct (resource, client_id) refusal was its own audit record written at once, and its own
    // warning line, each carrying ~4,000 characters the pod chose: thousands a second rotated the node's container
    // log (other pods' audit records with it) within seconds.
    const logLines: string[] = [];
    const logger = createLogger({ format: 'json', level: 'info', base: { app: 'nmi' }, destination: { write: (line: string) => void logLines.push(line) } });
    const { w, records, lines } = await auditedWorld('aggregate', { logger });
    const id = await w.managedIdentity('flood2-id');
    const flooder = await w.pod('flooder2', '127.0.1.70');
    const bystander = await w.pod('bystander', '127.0.1.71');
    await w.assign(flooder, id);
    await w.assign(bystander, id);
    const started = Date.now();

    const agent = w.agentFor(flooder.ip, 8);
    const long = 'y'.repeat(1500);
    const distinct = 500;
    for (let batch = 0; batch < distinct; batch += 50) {
      await Promise.all(
        Array.from({ length: 50 }, async (_, j) => {
          const n = String(batch + j).padStart(6, '0');
          const path = tokenPath(`&client_id=${long}${n}`, `https://${long}${n}.example`);
          const res = await agent.request({ origin: w.nmiUrl, path, method: 'GET', headers: { Metadata: 'true' } });
          await res.body.dump();
          expect(res.statusCode).toBe(400);
        }),
      );
    }
    // The other pod, after the flood: its refusals are written at once, values included, and its token is served.
    const otherIds = ['0b5c2a46-7d7e-4a59-9b1e-3f6c1d2e8a91', '0b5c2a46-7d7e-4a59-9b1e-3f6c1d2e8a92'];
    for (const other of otherIds) expect((await w.call(bystander.ip, tokenPath(`&client_id=${other}`))).status).toBe(400);
    expect((await w.call(bystander.ip, tokenPath())).status).toBe(200);
    const elapsedMs = Date.now() - started;

    const flooderRecords = () => records().filter((r) => r.pod?.uid === flooder.uid);
    // Before the flush: at most the cap of records from the flooder, none truncated yet.
    expect(flooderRecords().length).toBeLessThanOrEqual(MAX_IMMEDIATE_REFUSALS_PER_CALLER);
    expect(flooderRecords().every((r) => r.truncated === undefined)).toBe(true);
    const mine = records().filter((r) => r.pod?.uid === bystander.uid);
    expect(mine.filter((r) => r.reason === 'unbound').map((r) => r.resource)).toEqual([VAULT, VAULT]);
    expect(mine.filter((r) => r.reason === 'unbound')).toHaveLength(otherIds.length);
    expect(mine.find((r) => r.decision === 'issued')).toMatchObject({ status: 200, cache: 'miss', pod: { name: 'bystander' } });
    const before = lines.length;

    w.nmi!.audit.flush();
    const truncated = records().slice(before).filter((r) => r.truncated === true);
    expect(truncated).toHaveLength(1);
    expect(truncated[0]).toMatchObject({ decision: 'refused', status: 400, reason: 'unbound', pod: { name: 'flooder2', uid: flooder.uid } });
    expect(truncated[0]?.count).toBe(distinct - MAX_IMMEDIATE_REFUSALS_PER_CALLER);
    // Without the values the pod chose.
    expect(truncated[0]?.resource).toBeUndefined();
    expect(truncated[0]?.requested).toBeUndefined();
    expect(JSON.stringify(truncated[0])).not.toContain(long);
    // Every request is still accounted for.
    expect(flooderRecords().reduce((sum, r) => sum + r.count, 0)).toBe(distinct);
    // The bystander's refusals were not truncated.
    expect(records().some((r) => r.pod?.uid === bystander.uid && r.truncated === true)).toBe(false);

    // NMI's own log: the warning is written once per pod every 10 s, not once per request; the bystander's still is.
    const warnings = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'no bound identity matches the request; answered as IMDS does');
    const flooderWarnings = warnings.filter((l) => l['pod'] === 'flooder2');
    expect(flooderWarnings.length).toBeGreaterThanOrEqual(1);
    expect(flooderWarnings.length).toBeLessThanOrEqual(1 + Math.ceil(elapsedMs / 10_000));
    expect(warnings.filter((l) => l['pod'] === 'bystander')).toHaveLength(1);
    const flooderLogChars = logLines.filter((l) => l.includes('flooder2')).reduce((sum, l) => sum + l.length, 0);
    expect(flooderLogChars).toBeLessThan(64 * 1024);
  });

  it('never holds a token, a JWT, a client secret or an Authorization header', async () => {
    const { w, lines } = await auditedWorld('all');
    const mi = await w.managedIdentity('mi-id');
    const sp = await w.servicePrincipalIdentity('sp-id');
    const miPod = await w.pod('mi-pod', '127.0.1.47');
    const spPod = await w.pod('sp-pod', '127.0.1.48');
    await w.assign(miPod, mi);
    await w.assign(spPod, sp);
    const secret = await w.core.readNamespacedSecret({ name: 'sp-id-secret', namespace: 'default' });
    const secretValue = Buffer.from(String(secret.data?.['clientSecret']), 'base64').toString('utf8');
    expect(secretValue.length).toBeGreaterThan(8);

    const bearer = 'Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwb2QifQ.c2lnbmF0dXJl';
    const served: string[] = [];
    for (const pod of [miPod, spPod]) {
      for (const resource of [VAULT, 'https://management.azure.com']) {
        const reply = await w.call(pod.ip, tokenPath('', resource), { headers: { Metadata: 'true', Authorization: bearer } });
        expect(reply.status, reply.body).toBe(200);
        served.push(accessTokenOf(reply));
        // Served again from the cache.
        served.push(accessTokenOf(await w.call(pod.ip, tokenPath('', resource))));
      }
    }
    // Refusals too, one carrying an Authorization header and a secret-looking query.
    await w.call('127.0.1.252', tokenPath(`&client_secret=${secretValue}`), { headers: { Metadata: 'true', Authorization: bearer } });
    await w.call(miPod.ip, `${TOKEN_PATH}?api-version=2018-02-01&client_secret=${secretValue}`);
    w.nmi!.audit.flush();

    const text = lines.join('');
    expect(lines.length).toBeGreaterThanOrEqual(10);
    expect(text).toContain(`"pod":{"namespace":"default","name":"sp-pod","uid":"${spPod.uid}"}`);
    for (const token of served) {
      expect(text).not.toContain(token);
      // Not even its signature or payload part.
      for (const part of token.split('.')) expect(text).not.toContain(part);
    }
    expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{4,}/); // no JWT (header, payload) whatever its source
    expect(text).not.toContain(secretValue);
    expect(text).not.toMatch(/access_token|refresh_token|client_secret|authorization|bearer/i);
  });
});
