// `--token-cache-size=0` turns NMI's token cache off, as docs/flags.md says: every request is fetched from IMDS
// (the original's behaviour), and each pod still gets its own identity.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseNmiConfig } from '../../src/nmi/config.js';
import { decodeToken } from '../helpers/azure.js';
import { accessTokenOf, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type WorldIdentity } from '../helpers/nmi-world.js';

describe('NMI with --token-cache-size=0', () => {
  let world: NmiWorld;
  let id: WorldIdentity;

  beforeAll(async () => {
    const parsed = parseNmiConfig(['--node=node-0', '--token-cache-size=0'], {});
    if (!parsed.ok) throw new Error(parsed.errors.join('; '));
    world = await startNmiWorld({ nmi: { tokenCacheSize: parsed.value.tokenCacheSize, prefetch: true, prefetchResources: [VAULT] } });
    id = await world.managedIdentity('uncached');
    await world.assign(await world.pod('uncached-app', '127.0.3.1'), id);
  });
  afterAll(async () => {
    await world?.stop();
  });

  it('fetches every token from IMDS: three requests, three IMDS calls, no prefetch', async () => {
    world.azure.emulator.clearRequestLog();
    for (let i = 0; i < 3; i++) {
      const reply = await world.call('127.0.3.1', `${TOKEN_PATH}?resource=${encodeURIComponent(VAULT)}`);
      expect(reply.status).toBe(200);
      expect(decodeToken(accessTokenOf(reply)).appid).toBe(id.clientId);
    }
    const imdsCalls = world.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token');
    expect(imdsCalls.length).toBe(3);
    const metrics = await (await fetch(`${world.nmi!.metricsUrl}/metrics`)).text();
    expect(metrics).toMatch(/aadpodidentity_nmi_token_cache\{kind="hits"\} 0/);
    expect(metrics).toMatch(/aadpodidentity_nmi_token_cache\{kind="entries"\} 0/);
  });
});
