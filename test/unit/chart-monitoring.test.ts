// The chart's monitoring objects (issue 14 item 4): ServiceMonitors for MIC and NMI (NMI's with the metrics bearer
// token when one is set), a PrometheusRule, a Grafana dashboard ConfigMap; off by default, kube-prometheus-stack's
// conventions (reference/operations.md §5).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ChartRenderError, renderChart, type Obj } from '../helpers/helm-render.js';
import { CHART, RELEASE, dashboard, renderMonitoring, ruleGroups } from '../helpers/monitoring.js';

const MONITORING_KINDS = ['ServiceMonitor', 'PodMonitor', 'PrometheusRule'];
const meta = (o: Obj) => o['metadata'] as { name: string; namespace: string; labels: Record<string, string>; annotations?: Record<string, string> };
const kinds = (objects: Obj[], kind: string) => objects.filter((o) => o['kind'] === kind);
const isDashboard = (o: Obj) => o['kind'] === 'ConfigMap' && meta(o).labels['grafana_dashboard'] === '1';

describe('chart monitoring objects', () => {
  it('renders none by default', () => {
    const { objects } = renderChart(CHART, { releaseName: RELEASE, namespace: RELEASE });
    expect(objects.filter((o) => MONITORING_KINDS.includes(String(o['kind'])) || isDashboard(o))).toEqual([]);
  });

  it('selects the metrics Services of MIC and NMI by their port name, in the release namespace', () => {
    const objects = renderMonitoring();
    const services = kinds(objects, 'Service');
    const monitors = kinds(objects, 'ServiceMonitor');
    expect(monitors.map((m) => meta(m).name).sort()).toEqual([`${RELEASE}-mic`, `${RELEASE}-nmi`]);
    for (const m of monitors) {
      const spec = m['spec'] as { selector: { matchLabels: Record<string, string> }; namespaceSelector: { matchNames: string[] }; endpoints: { port: string; path: string }[] };
      expect(spec.namespaceSelector.matchNames).toEqual([RELEASE]);
      const selected = services.filter((s) => Object.entries(spec.selector.matchLabels).every(([k, v]) => meta(s).labels[k] === v));
      expect(selected.map((s) => meta(s).name), meta(m).name).toEqual([`${meta(m).name}-metrics`]);
      const ports = (selected[0]!['spec'] as { ports: { name: string }[] }).ports.map((p) => p.name);
      expect(ports).toContain(spec.endpoints[0]!.port);
      expect(spec.endpoints[0]!.path).toBe('/metrics');
    }
  });

  it("sends NMI's metrics bearer token from nmi.metricsBearerTokenSecret, and nothing without it", () => {
    const nmiMonitor = (objects: Obj[]) => kinds(objects, 'ServiceMonitor').find((m) => meta(m).name.endsWith('-nmi'))!;
    const endpoint = (objects: Obj[]) => (nmiMonitor(objects)['spec'] as { endpoints: Obj[] }).endpoints[0]!;
    expect(endpoint(renderMonitoring())['authorization']).toBeUndefined();
    const objects = renderMonitoring({ nmi: { metricsBearerTokenSecret: { name: 'nmi-metrics-token', key: 'tok' } } });
    expect(endpoint(objects)['authorization']).toEqual({ type: 'Bearer', credentials: { name: 'nmi-metrics-token', key: 'tok' } });
    // The operator reads that Secret from the monitor's namespace: the Secret the DaemonSet mounts.
    expect(meta(nmiMonitor(objects)).namespace).toBe(RELEASE);
    const mic = kinds(objects, 'ServiceMonitor').find((m) => meta(m).name.endsWith('-mic'))!;
    expect((mic['spec'] as { endpoints: Obj[] }).endpoints[0]!['authorization']).toBeUndefined();
  });

  it('refuses a monitoring namespace other than the release namespace when the bearer token is set', () => {
    const render = () => renderMonitoring({ monitoring: { namespace: 'monitoring' }, nmi: { metricsBearerTokenSecret: { name: 't', key: 'token' } } });
    expect(render).toThrow(ChartRenderError);
    expect(render).toThrow(/monitoring.namespace must be the release namespace/);
  });

  it('puts every object in monitoring.namespace, with monitoring.labels and each kind\'s own labels', () => {
    const objects = renderMonitoring({
      monitoring: {
        namespace: 'monitoring',
        labels: { release: 'kube-prometheus-stack' },
        serviceMonitor: { labels: { a: 'sm' }, interval: '15s', scrapeTimeout: '10s' },
        prometheusRule: { labels: { a: 'rule' } },
        dashboard: { labels: { a: 'dash' }, annotations: { 'k8s-sidecar-target-directory': '/tmp/dashboards/aad' } },
      },
    });
    const mine = objects.filter((o) => MONITORING_KINDS.includes(String(o['kind'])) || isDashboard(o));
    expect(mine).toHaveLength(4);
    for (const o of mine) {
      expect(meta(o).namespace).toBe('monitoring');
      expect(meta(o).labels['release']).toBe('kube-prometheus-stack');
    }
    for (const m of kinds(objects, 'ServiceMonitor')) {
      expect(meta(m).labels['a']).toBe('sm');
      expect((m['spec'] as { endpoints: Obj[] }).endpoints[0]).toMatchObject({ interval: '15s', scrapeTimeout: '10s' });
    }
    expect(meta(kinds(objects, 'PrometheusRule')[0]!).labels['a']).toBe('rule');
    const dash = objects.find(isDashboard)!;
    expect(meta(dash).labels['a']).toBe('dash');
    expect(meta(dash).annotations).toEqual({ 'k8s-sidecar-target-directory': '/tmp/dashboards/aad' });
  });

  it('needs the metrics Services it selects, and says which value to set', () => {
    expect(() => renderMonitoring({ nmi: { metricsService: { enabled: false } } })).toThrow(/needs nmi.metricsService.enabled/);
    expect(() => renderMonitoring({ mic: { metricsService: { enabled: false } } })).toThrow(/needs mic.metricsService.enabled/);
  });

  it('stops under --reuse-values from a chart version without monitoring values, saying what to run', () => {
    const { monitoring: _dropped, ...older } = parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as Obj;
    expect(() => renderChart(CHART, { releaseName: RELEASE, namespace: RELEASE, chartValues: older })).toThrow(/monitoring\).*--reset-then-reuse-values/s);
  });

  it('in managed mode (no MIC) renders no MIC monitor and no MIC alerts', () => {
    const objects = renderMonitoring({ operationMode: 'managed' });
    expect(kinds(objects, 'ServiceMonitor').map((m) => meta(m).name)).toEqual([`${RELEASE}-nmi`]);
    expect(ruleGroups(objects).map((g) => g.name)).toEqual(['aad-pod-identity-nmi']);
  });

  it('gives every alert a severity, summary, description and a runbook_url to a section of docs/troubleshooting.md', () => {
    const doc = readFileSync(join(CHART, '..', '..', 'docs', 'troubleshooting.md'), 'utf8');
    // GitHub's anchors: lower-case heading text, spaces to '-', punctuation dropped.
    const anchors = new Set([...doc.matchAll(/^#+\s+(.+)$/gm)].map((m) => m[1]!.trim().toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-')));
    const alerts = ruleGroups(renderMonitoring()).flatMap((g) => g.rules);
    expect(alerts.length).toBeGreaterThanOrEqual(12);
    for (const a of alerts) {
      expect(a.alert, a.alert).toMatch(/^AadPodIdentity[A-Z][A-Za-z0-9]+$/);
      expect(['critical', 'warning']).toContain(a.labels?.['severity']);
      expect(a.annotations?.['summary'], a.alert).toMatch(/^[A-Z].*\.$/);
      expect(a.annotations?.['description'], a.alert).toMatch(/^[A-Z0-9{].*\.$/);
      const url = a.annotations?.['runbook_url'] ?? '';
      expect(url.startsWith('https://github.com/aad-pod-identity-ts/aad-pod-identity-ts/blob/main/docs/troubleshooting.md#'), url).toBe(true);
      const anchor = url.split('#')[1]!;
      expect(anchor, a.alert).toBe(a.alert.toLowerCase());
      expect(anchors.has(anchor), `docs/troubleshooting.md has no section "${a.alert}"`).toBe(true);
    }
    expect(new Set(alerts.map((a) => a.alert)).size).toBe(alerts.length);
  });

  it('uses the thresholds and job names from the values', () => {
    const groups = ruleGroups(renderMonitoring({
      monitoring: { prometheusRule: { for: '2m', rateWindow: '1m', tokenLatencyP99Seconds: 0.25, micJob: 'mic', nmiJob: 'nmi', runbookBaseUrl: 'https://wiki.example/aad' } },
    }));
    const rule = (name: string) => groups.flatMap((g) => g.rules).find((r) => r.alert === name)!;
    expect(rule('AadPodIdentityMICDown').expr).toBe('absent(up{job="mic"} == 1)');
    expect(rule('AadPodIdentityNMIDown').expr).toBe('up{job="nmi"} == 0');
    expect(rule('AadPodIdentityNMIDown').for).toBe('2m');
    expect(rule('AadPodIdentityTokenLatencyHigh').expr).toMatch(/\[1m\]\)\)\) > 0\.25$/);
    expect(rule('AadPodIdentityTokenLatencyHigh').annotations?.['runbook_url']).toBe('https://wiki.example/aad#aadpodidentitytokenlatencyhigh');
    expect(() => renderMonitoring({ monitoring: { prometheusRule: { for: 'soon' } } })).toThrow(/schema/);
  });

  it('ships a dashboard JSON Grafana can load, every panel with a query', () => {
    const d = dashboard(renderMonitoring()) as ReturnType<typeof dashboard> & { uid: string; title: string };
    expect(d.uid).toBe('aad-pod-identity');
    expect(d.templating.list.map((v) => v.name)).toEqual(['datasource', 'mic_job', 'nmi_job']);
    const panels = d.panels.filter((p) => p.type !== 'row');
    expect(panels.length).toBeGreaterThanOrEqual(20);
    for (const p of panels) expect(p.targets?.length ?? 0, p.title).toBeGreaterThan(0);
    const exprs = panels.flatMap((p) => p.targets!.map((t) => t.expr)).join('\n');
    for (const topic of ['errors_by_reason', 'assigned_identities', 'new_leader_election', 'identity_wait', 'imds_operations_errors', 'nmi_operations_duration_seconds_bucket']) {
      expect(exprs).toContain(topic);
    }
  });
});
