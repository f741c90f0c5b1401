// The original's NMI metrics that dashboards use: aadpodidentity_imds_operations_* per token call to IMDS/AAD (by the
// original's operation_type values), get_secret errors in aadpodidentity_kubernetes_api_operations_errors_count,
// and the token path as operation_type of aadpodidentity_nmi_operations_duration_seconds.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld } from '../helpers/nmi-world.js';

describe("NMI's metrics as the original's dashboards read them", () => {
  let world: NmiWorld;
  const scrape = async (): Promise<string> => (await fetch(`${world.nmi!.metricsUrl}/metrics`)).text();
  const value = (text: string, series: string): number => {
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? 0 : Number(line.slice(series.length + 1));
  };

  beforeAll(async () => {
    world = await startNmiWorld({ nmi: { tokenCacheSize: 0 } });
  });
  afterAll(async () => {
    await world?.stop();
  });

  it('counts IMDS calls and failures for user-assigned identities as adal_token_msi_userassignedid', async () => {
    const ok = await world.managedIdentity('metrics-ok');
    const missing = await world.managedIdentity('metrics-not-on-vm', { attach: false });
    await world.assign(await world.pod('metrics-a', '127.0.4.1'), ok);
    await world.assign(await world.pod('metrics-b', '127.0.4.2'), missing);
    const path = `${TOKEN_PATH}?resource=${encodeURIComponent(VAULT)}`;
    expect((await world.call('127.0.4.1', path)).status).toBe(200);
    expect((await world.call('127.0.4.2', path)).status).toBe(403); // IMDS: Identity not found
    const text = await scrape();
    expect(value(text, 'aadpodidentity_imds_operations_duration_seconds_count{operation_type="adal_token_msi_userassignedid"}')).toBe(2);
    expect(value(text, 'aadpodidentity_imds_operations_errors_count{operation_type="adal_token_msi_userassignedid"}')).toBe(1);
    expect(text).toContain('aadpodidentity_imds_operations_duration_seconds_bucket{le="0.01",operation_type="adal_token_msi_userassignedid"}');
    expect(value(text, 'aadpodidentity_nmi_operations_duration_seconds_count{operation_type="/metadata/identity/oauth2/token",status_code="200"}')).toBe(1);
    expect(value(text, 'aadpodidentity_nmi_operations_duration_seconds_count{operation_type="/metadata/identity/oauth2/token",status_code="403"}')).toBe(1);
  });

  it('counts service principal token calls as adal_token, and a Secret that cannot be read as a get_secret error', async () => {
    const sp = await world.servicePrincipalIdentity('metrics-sp');
    await world.assign(await world.pod('metrics-sp-app', '127.0.4.3'), sp);
    const path = `${TOKEN_PATH}?resource=${encodeURIComponent(VAULT)}`;
    expect((await world.call('127.0.4.3', path)).status).toBe(200);
    let text = await scrape();
    expect(value(text, 'aadpodidentity_imds_operations_duration_seconds_count{operation_type="adal_token"}')).toBe(1);
    expect(value(text, 'aadpodidentity_kubernetes_api_operations_errors_count{operation_type="get_secret"}')).toBe(0);

    const ref = (sp.cr['spec'] as { clientPassword: { name: string; namespace: string } }).clientPassword;
    await world.core.deleteNamespacedSecret({ name: ref.name, namespace: ref.namespace });
    const reply = await world.call('127.0.4.3', path);
    expect(reply.status).toBe(503);
    expect(reply.body).not.toContain(ref.name);
    text = await scrape();
    expect(value(text, 'aadpodidentity_kubernetes_api_operations_errors_count{operation_type="get_secret"}')).toBe(1);
    // The Secret read failed before AAD was asked: not an IMDS/AAD operation.
    expect(value(text, 'aadpodidentity_imds_operations_duration_seconds_count{operation_type="adal_token"}')).toBe(1);
    expect(value(text, 'aadpodidentity_imds_operations_errors_count{operation_type="adal_token"}')).toBe(0);
  });
});
