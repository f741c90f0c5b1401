// Dashboards built for the original select histogram buckets by `le`: every bound of the original's views
// (pkg/metrics/metrics.go, v1.8.17) must be among ours, metric by metric.
import { describe, expect, it } from 'vitest';
import type { Registry } from 'prom-client';
import { createMicMetrics } from '../../src/mic/metrics.js';
import { createNmiMetrics } from '../../src/nmi/metrics.js';

const WRITE = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2, 3, 4, 5, 10];
const CYCLE = [0.5, 1, 5, 10, 30, 60, 120, 300, 600, 900, 1200];
const NMI = [0.5, 1, 2, 3, 4, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100];

const ORIGINAL: Record<string, number[]> = {
  aadpodidentity_assigned_identity_addition_duration_seconds: WRITE,
  aadpodidentity_assigned_identity_deletion_duration_seconds: WRITE,
  aadpodidentity_assigned_identity_update_duration_seconds: WRITE,
  aadpodidentity_mic_cycle_duration_seconds: CYCLE,
  aadpodidentity_cloud_provider_operations_duration_seconds: CYCLE,
  aadpodidentity_nmi_operations_duration_seconds: NMI,
  aadpodidentity_imds_operations_duration_seconds: WRITE,
};

async function bucketBounds(registry: Registry): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  for (const metric of await registry.getMetricsAsJSON()) {
    if (String(metric.type) !== 'histogram') continue;
    const bounds = metric.values
      .filter((v) => (v as { metricName?: string }).metricName?.endsWith('_bucket') && v.labels['le'] !== '+Inf')
      .map((v) => Number(v.labels['le']));
    out.set(metric.name, [...new Set(bounds)]);
  }
  return out;
}

describe("histogram buckets keep every bound of the original's", () => {
  it('MIC and NMI', async () => {
    const mic = createMicMetrics();
    mic.observeAssigned('addition', 0.1);
    mic.observeAssigned('deletion', 0.1);
    mic.observeAssigned('update', 0.1);
    mic.cycle(1);
    mic.armCall('vmss_update', 1, false);
    const nmi = createNmiMetrics();
    nmi.observeRequest('token', 200, 'ns', 'r', 0.001);
    nmi.observeUpstream('adal_token', 0.01, false);
    const ours = new Map([...(await bucketBounds(mic.registry)), ...(await bucketBounds(nmi.registry))]);
    for (const [name, bounds] of Object.entries(ORIGINAL)) {
      expect(ours.has(name), name).toBe(true);
      for (const le of bounds) expect(ours.get(name), `${name} le=${le}`).toContain(le);
    }
  });

  it("names NMI's token routes by the original's path, other routes by ours", async () => {
    const nmi = createNmiMetrics();
    nmi.observeRequest('token', 200, 'ns', 'r', 0.001);
    nmi.observeRequest('host-token', 404, 'ns', 'r', 0.001);
    nmi.observeRequest('proxy', 404, '', '', 0.001);
    const text = await nmi.anonymousMetrics();
    expect(text).toContain('aadpodidentity_nmi_operations_duration_seconds_count{operation_type="/metadata/identity/oauth2/token",status_code="200"} 1');
    expect(text).toContain('aadpodidentity_nmi_operations_duration_seconds_count{operation_type="/host/token",status_code="404"} 1');
    expect(text).toContain('aadpodidentity_nmi_operations_duration_seconds_count{operation_type="proxy",status_code="404"} 1');
  });
});
