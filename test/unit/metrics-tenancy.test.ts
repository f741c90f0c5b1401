// What NMI's anonymous metrics view and MIC's metrics may carry as labels (issue 10 row 12): nothing that names a
// tenant. Label names are checked per metric, so a metric added later with a namespace label fails here.
import { describe, expect, it } from 'vitest';
import { createMicMetrics } from '../../src/mic/metrics.js';
import { createNmiMetrics, renderWithout } from '../../src/nmi/metrics.js';

async function labelNames(registry: { getMetricsAsJSON(): Promise<Array<{ name: string; values: Array<{ labels: Record<string, unknown> }> }>> }) {
  const out = new Map<string, Set<string>>();
  for (const m of await registry.getMetricsAsJSON()) {
    const names = out.get(m.name) ?? new Set<string>();
    for (const v of m.values) for (const k of Object.keys(v.labels)) names.add(k);
    out.set(m.name, names);
  }
  return out;
}

describe('metrics labels', () => {
  it('sums namespace and resource out of NMI’s anonymous view, and keeps them in the full one', async () => {
    const m = createNmiMetrics();
    m.setTokenCacheStats(() => ({ hits: 1, misses: 2, upstreamCalls: 3, refreshes: 0, entries: 1 }));
    m.observeRequest('token', 200, 'team-a', 'https://vault.azure.net', 0.002);
    m.observeRequest('token', 200, 'team-b', 'https://storage.azure.com', 0.02);
    m.observeRequest('token', 200, 'team-b', 'api://x"y\\z\nw', 7);
    m.observeRequest('proxy', 403, 'team-b', '', 0.01);
    m.countKubeError('watch');
    const anonymous = await m.anonymousMetrics();
    expect(anonymous).not.toMatch(/team-|vault|storage|api:|namespace=|resource=/);
    const lines = anonymous.split('\n');
    expect(lines).toContain('aadpodidentity_nmi_operations_duration_seconds_count{operation_type="/metadata/identity/oauth2/token",status_code="200"} 3');
    expect(lines).toContain('aadpodidentity_nmi_operations_duration_seconds_bucket{le="0.005",operation_type="/metadata/identity/oauth2/token",status_code="200"} 1');
    expect(lines).toContain('aadpodidentity_nmi_operations_duration_seconds_bucket{le="+Inf",operation_type="/metadata/identity/oauth2/token",status_code="200"} 3');
    expect(lines).toContain('aadpodidentity_nmi_operations_duration_seconds_sum{operation_type="/metadata/identity/oauth2/token",status_code="200"} 7.022');
    expect(lines).toContain('aadpodidentity_nmi_operations_duration_seconds_count{operation_type="proxy",status_code="403"} 1');
    expect(lines).toContain('aadpodidentity_kubernetes_api_operations_errors_count{operation_type="watch"} 1');
    expect(lines).toContain('aadpodidentity_nmi_token_cache{kind="upstream_calls"} 3');
    const full = await m.registry.metrics();
    expect(full).toContain('namespace="team-a",resource="https://vault.azure.net"');
    // With nothing dropped, the rendering is prom-client's own, line for line (escaping included; it adds blank lines).
    const nonEmpty = (text: string) => text.split('\n').filter((l) => l !== '');
    expect(nonEmpty(renderWithout(await m.registry.getMetricsAsJSON(), []))).toEqual(nonEmpty(full));
  });

  it('gives MIC’s metrics no label but operation_type, whose values are fixed operation names', async () => {
    const m = createMicMetrics();
    m.observeAssigned('addition', 0.1);
    m.kubeError('assigned_identity_addition');
    m.cycle(0.2);
    m.newLeader();
    m.armCall('vmss_update', 0.3, true);
    const seen = await labelNames(m.registry);
    for (const [name, labels] of seen) expect([...labels].filter((l) => l !== 'operation_type' && l !== 'le'), name).toEqual([]);
  });
});
