// A real Prometheus (Debian's binary, as a child process in its own process group) scrapes the loopback sandbox's
// MIC and NMI with the chart's rendered alert rules; ARM throttling is injected into the Azure emulator and the
// matching alert must go pending, then firing, through Prometheus's own API (issue 14 item 6). Prints the time from
// fault to pending and to firing. Short scrape/evaluation intervals and a short `for`/rate window (chart values).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseReadyLine } from '../../src/sandbox/index.js';
import { startProcess, type ManagedProcess } from '../../src/sandbox/network/processes.js';
import { renderMonitoring, ruleGroups, skipWithoutPrometheus } from '../helpers/monitoring.js';
import { eventually, startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';

interface PromAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: 'pending' | 'firing' | 'inactive';
}

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** host:port and path of a metrics URL from a ready line (`http://127.0.0.1:<port>[/metrics]`). */
function target(url: unknown): { hostPort: string; path: string } {
  const u = new URL(String(url));
  return { hostPort: u.host, path: u.pathname === '/' ? '/metrics' : u.pathname };
}

describe.skipIf(skipWithoutPrometheus('prometheus-alerts.test.ts'))('Prometheus scraping the sandbox, with the chart rules', () => {
  let t: TestSandbox | undefined;
  let prom: ManagedProcess | undefined;
  let dir = '';
  let api = '';

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'aad-prometheus-'));
    t = await startTestSandbox({ network: 'loopback', nodes: 1, mic: { replicas: 1 } });
    const mic = target(parseReadyLine(t.sandbox.mic(0)!.readyLine)?.['metrics']);
    const node = t.sandbox.endpoints.nodes[0]!.name;
    const nmi = target(parseReadyLine(t.sandbox.nmi(node)!.readyLine)?.['metrics']);
    const rules = ruleGroups(
      renderMonitoring({ monitoring: { prometheusRule: { for: '3s', rateWindow: '20s', micJob: 'mic', nmiJob: 'nmi' } } }),
    );
    await writeFile(join(dir, 'rules.yaml'), stringify({ groups: rules.map((g) => ({ ...g, interval: '1s' })) }));
    await writeFile(
      join(dir, 'prometheus.yml'),
      stringify({
        global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
        rule_files: [join(dir, 'rules.yaml')],
        scrape_configs: [
          { job_name: 'mic', metrics_path: mic.path, static_configs: [{ targets: [mic.hostPort] }] },
          { job_name: 'nmi', metrics_path: nmi.path, static_configs: [{ targets: [nmi.hostPort], labels: { node } }] },
        ],
      }),
    );
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    prom = await startProcess(
      {
        name: 'prometheus',
        argv: [
          'prometheus',
          `--config.file=${join(dir, 'prometheus.yml')}`,
          `--storage.tsdb.path=${join(dir, 'data')}`,
          `--web.listen-address=127.0.0.1:${port}`,
          '--log.level=warn',
        ],
        logFile: join(dir, 'prometheus.log'),
      },
      process.env,
    );
    await eventually(async () => (await fetch(`${api}/-/ready`).catch(() => undefined))?.ok, 30_000, 'Prometheus ready');
  }, 150_000);

  afterAll(async () => {
    if (prom !== undefined) {
      await prom.stop('SIGTERM', 5_000);
      try {
        process.kill(-prom.pid, 'SIGKILL'); // the whole group, should anything be left in it
      } catch {
        // already gone
      }
    }
    await t?.stop();
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  }, 60_000);

  const alerts = async (): Promise<PromAlert[]> => {
    const body = (await (await fetch(`${api}/api/v1/alerts`)).json()) as { data: { alerts: PromAlert[] } };
    return body.data.alerts;
  };
  const query = async (q: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> => {
    const body = (await (await fetch(`${api}/api/v1/query?query=${encodeURIComponent(q)}`)).json()) as { data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
    return body.data.result;
  };

  it('scrapes both targets, with no alert active while all is well', async () => {
    await eventually(async () => (await query('up == 1')).length === 2, 20_000, 'MIC and NMI targets up');
    await eventually(async () => (await query('aadpodidentity_assigned_identities')).length === 3, 20_000, 'the AAI state gauge scraped');
    // Before the first scrape `absent(up{job="mic"} == 1)` holds, so MICDown may be active for the first seconds.
    await eventually(async () => (await alerts()).length === 0, 20_000, 'no alert active');
    expect(await alerts()).toEqual([]);
  }, 60_000);

  it('ARM throttling: AadPodIdentityARMThrottled goes pending, then firing', async () => {
    const s = t!;
    const { compute } = s.sandbox.endpoints.azure;
    const prefix = compute === 'vmss' ? 'vmss' : 'vm';
    const started = Date.now();
    for (const op of [`${prefix}_get`, `${prefix}_patch`] as const) s.sandbox.azure.injectFault({ operation: op, status: 429, retryAfter: 1, count: 100_000 });
    // Give MIC ARM work: an identity bound to a pod.
    const id = s.sandbox.createIdentity('throttled');
    await s.createIdentity('default', 'throttled', { type: 0, resourceID: id.id, clientID: id.clientId });
    await s.createBinding('default', 'throttled', 'throttled', 'throttled');
    await s.startPod('default', 'throttled-app', 'throttled');

    const stateOf = async (state: PromAlert['state']) =>
      (await alerts()).find((a) => a.labels['alertname'] === 'AadPodIdentityARMThrottled' && a.state === state);
    const pending = await eventually(() => stateOf('pending'), 60_000, 'AadPodIdentityARMThrottled pending');
    const pendingMs = Date.now() - started;
    const firing = await eventually(() => stateOf('firing'), 60_000, 'AadPodIdentityARMThrottled firing');
    const firingMs = Date.now() - started;
    console.log(`ARM throttling injected → AadPodIdentityARMThrottled pending after ${(pendingMs / 1000).toFixed(1)} s, firing after ${(firingMs / 1000).toFixed(1)} s (scrape/eval 1 s, rate window 20 s, for 3 s)`);

    expect(pending.labels['severity']).toBe('warning');
    expect(firing.labels['operation_type']).toMatch(/^(vm|vmss)_(get|update)$/);
    expect(firing.annotations['description']).toContain(`MIC's ${firing.labels['operation_type']} calls`);
    expect(firing.annotations['runbook_url']).toMatch(/troubleshooting\.md#aadpodidentityarmthrottled$/);
    // Throttling is not reported as a missing role or another error, and nothing is down.
    const names = new Set((await alerts()).map((a) => a.labels['alertname']));
    for (const other of ['AadPodIdentityAuthorizationFailed', 'AadPodIdentityAssignmentErrors', 'AadPodIdentityMICDown', 'AadPodIdentityNMIDown']) {
      expect(names.has(other), other).toBe(false);
    }

    // The fault lifted: the identity gets attached, and the alert resolves once the window has no throttled calls.
    s.sandbox.azure.clearFaults();
    await eventually(async () => (await s.assignedFor('default', 'throttled-app')).some((a) => (a.status as { status?: string } | undefined)?.status === 'Assigned'), 60_000, 'Assigned once ARM answers again');
    await eventually(async () => (await stateOf('firing')) === undefined && (await stateOf('pending')) === undefined, 60_000, 'alert resolved');
  }, 180_000);

  it('a role withheld (ARM answers LinkedAuthorizationFailed): AadPodIdentityAuthorizationFailed fires with the reason', async () => {
    const s = t!;
    const { subscriptionId, clusterPrincipal } = s.sandbox.endpoints.azure;
    // An identity in a resource group where MIC's principal holds no role: ARM refuses to link it, for real.
    const group = s.sandbox.azure.createResourceGroup('no-role-identities');
    const id = s.sandbox.azure.createUserAssignedIdentity('no-role-identities', 'no-role');
    const started = Date.now();
    await s.createIdentity('default', 'no-role', { type: 0, resourceID: id.id, clientID: id.clientId });
    await s.createBinding('default', 'no-role', 'no-role', 'no-role');
    await s.startPod('default', 'no-role-app', 'no-role');
    const firing = await eventually(
      async () => (await alerts()).find((a) => a.labels['alertname'] === 'AadPodIdentityAuthorizationFailed' && a.state === 'firing'),
      90_000,
      'AadPodIdentityAuthorizationFailed firing',
    );
    console.log(`Managed Identity Operator withheld → AadPodIdentityAuthorizationFailed firing after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    expect(firing.labels['reason']).toBe('LinkedAuthorizationFailed');
    expect(firing.annotations['description']).toContain('Managed Identity Operator');
    expect((await alerts()).some((a) => a.labels['alertname'] === 'AadPodIdentityARMThrottled')).toBe(false);
    expect(s.sandbox.azure.checkAccess(clusterPrincipal.objectId, 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action', id.id)).toBe(false);
    s.sandbox.azure.grantRole(clusterPrincipal.objectId, 'Managed Identity Operator', group.id);
    expect(group.id.startsWith(`/subscriptions/${subscriptionId}/`)).toBe(true);
    await eventually(async () => (await s.assignedFor('default', 'no-role-app')).some((a) => (a.status as { status?: string } | undefined)?.status === 'Assigned'), 60_000, 'Assigned once the role is there');
  }, 180_000);
});
