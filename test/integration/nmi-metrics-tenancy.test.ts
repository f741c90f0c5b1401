// Attack row 12 of issue 10: a pod on the node reads NMI's :9090/metrics and :8085 probes. Without the metrics bearer
// token it must learn no namespace, resource or identity name of anyone; with it, Prometheus gets the full series.
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type WorldPod } from '../helpers/nmi-world.js';

const TOKEN = 'scrape-token-3b1f9d2c7e';
const PAYROLL = 'api://team-a-payroll-ledger';

describe('NMI metrics and probes as a pod on the node sees them (issue 10 row 12)', () => {
  let world: NmiWorld;
  let work: string;
  let tokenFile: string;
  let victim: WorldPod;
  let attacker: WorldPod;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'nmi-metrics-'));
    tokenFile = join(work, 'token');
    writeFileSync(tokenFile, `${TOKEN}\n`);
    world = await startNmiWorld({ nmi: { metricsBearerTokenFile: tokenFile } });
    victim = await world.pod('payroll-api', '127.0.3.11', { namespace: 'team-a' });
    attacker = await world.pod('curious', '127.0.3.12', { namespace: 'team-b' });
    const identity = await world.managedIdentity('payroll-writer', { namespace: 'team-a' });
    await world.assign(victim, identity);
    for (const resource of [VAULT, PAYROLL]) {
      const reply = await world.call(victim.ip, `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(resource)}`);
      expect(reply.status, reply.body).toBeLessThan(600);
    }
    // A request from a pod that is not there: NMI must not publish the caller's address either.
    await world.call('127.0.3.99', `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(VAULT)}`);
  });
  afterAll(async () => {
    await world?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const get = async (fromIp: string, url: string, headers: Record<string, string> = {}) => {
    const u = new URL(url);
    const res = await world.agentFor(fromIp).request({ origin: u.origin, path: u.pathname, method: 'GET', headers });
    return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
  };
  const metricsUrl = () => new URL('/metrics', world.nmi!.metricsUrl).href;
  const tenantTerms = () => ['team-a', 'team-b', 'payroll', 'curious', PAYROLL, VAULT, 'vault.azure.net', victim.ip, attacker.ip, '127.0.3.99', 'namespace=', 'resource='];

  it('serves an anonymous scrape the metrics without any namespace, resource, pod or identity name', async () => {
    const anonymous = await get(attacker.ip, metricsUrl());
    expect(anonymous.status).toBe(200);
    expect(anonymous.body).toContain('aadpodidentity_nmi_operations_duration_seconds_count{operation_type="/metadata/identity/oauth2/token",status_code="200"}');
    expect(anonymous.body).toContain('aadpodidentity_nmi_token_cache');
    for (const term of tenantTerms()) expect(anonymous.body, term).not.toContain(term);
  });

  it('serves the full series, namespace and resource labels included, with the bearer token', async () => {
    const full = await get('127.0.0.1', metricsUrl(), { authorization: `Bearer ${TOKEN}` });
    expect(full.status).toBe(200);
    expect(full.body).toMatch(/aadpodidentity_nmi_operations_duration_seconds_count\{operation_type="\/metadata\/identity\/oauth2\/token",status_code="200",namespace="team-a",resource="https:\/\/vault\.azure\.net"\} 1/);
    expect(full.body).toContain(`resource="${PAYROLL}"`);
    // Scheme names are case-insensitive (RFC 9110).
    expect((await get('127.0.0.1', metricsUrl(), { authorization: `bearer   ${TOKEN}` })).body).toContain('namespace="team-a"');
  });

  it('answers 401 with no series to a wrong, partial, padded or non-bearer credential', async () => {
    for (const authorization of [`Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, 'Bearer ', `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}`, TOKEN, `Bearer ${TOKEN} extra`]) {
      const reply = await get(attacker.ip, metricsUrl(), { authorization });
      expect(reply.status, authorization).toBe(401);
      expect(reply.headers['www-authenticate']).toBe('Bearer realm="nmi-metrics"');
      expect(reply.body).not.toContain('aadpodidentity');
      for (const term of tenantTerms()) expect(reply.body, term).not.toContain(term);
    }
  });

  it('follows a rotated token file (a Secret update swaps the file): the old token stops working', async () => {
    const next = `${TOKEN}-rotated`;
    writeFileSync(`${tokenFile}.new`, next);
    renameSync(`${tokenFile}.new`, tokenFile);
    expect((await get('127.0.0.1', metricsUrl(), { authorization: `Bearer ${TOKEN}` })).status).toBe(401);
    const full = await get('127.0.0.1', metricsUrl(), { authorization: `Bearer ${next}` });
    expect(full.status).toBe(200);
    expect(full.body).toContain('namespace="team-a"');
    // An emptied file grants nothing, not even to an empty token.
    writeFileSync(tokenFile, '\n');
    expect((await get('127.0.0.1', metricsUrl(), { authorization: `Bearer ${next}` })).status).toBe(401);
    writeFileSync(tokenFile, TOKEN);
  });

  it('answers the health and readiness probes with bodies that name no tenant', async () => {
    for (const path of ['/healthz', '/readyz', '/status', '/', '/metrics']) {
      const reply = await get(attacker.ip, new URL(path, world.nmi!.probeUrl).href);
      expect([200, 404, 503], path).toContain(reply.status);
      for (const term of tenantTerms()) expect(reply.body, `${path}: ${term}`).not.toContain(term);
    }
    expect((await get(attacker.ip, new URL('/healthz', world.nmi!.probeUrl).href)).body).toBe('Active');
    // doctor's view: node facts only, exactly these keys.
    const status = JSON.parse((await get(attacker.ip, new URL('/status', world.nmi!.probeUrl).href)).body) as Record<string, unknown>;
    expect(Object.keys(status).sort()).toEqual(['kubenet', 'rules', 'synced']);
    expect(status).toMatchObject({ rules: 'not-managed', synced: true });
  });
});

describe('NMI metrics without a token file', () => {
  let world: NmiWorld;
  beforeAll(async () => {
    world = await startNmiWorld();
    const pod = await world.pod('web', '127.0.3.21', { namespace: 'team-c' });
    await world.assign(pod, await world.managedIdentity('web-id', { namespace: 'team-c' }));
    await world.call(pod.ip, `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(VAULT)}`);
  });
  afterAll(async () => {
    await world?.stop();
  });

  it('has no full view: any Authorization header still gets the anonymous metrics', async () => {
    const url = new URL('/metrics', world.nmi!.metricsUrl);
    for (const headers of [{}, { authorization: 'Bearer anything' }]) {
      const res = await world.agentFor('127.0.3.21').request({ origin: url.origin, path: url.pathname, method: 'GET', headers });
      const body = await res.body.text();
      expect(res.statusCode).toBe(200);
      expect(body).toContain('operation_type="/metadata/identity/oauth2/token",status_code="200"');
      expect(body).not.toContain('team-c');
      expect(body).not.toContain('namespace=');
    }
  });
});
