// An unmodified @azure/identity ManagedIdentityCredential, pointed at NMI with AZURE_POD_IDENTITY_AUTHORITY_HOST,
// gets its own pod's token.
//
// How the caller gets its pod IP: the SDK has no option to bind a local address, and on loopback the kernel picks
// 127.0.0.1 as the source for any 127.x destination. So the SDK runs unmodified in a child process (msal-node keeps
// process-global statics: one process per scenario), and the pod it plays has the IP 127.0.0.1. A second pod on
// 127.0.1.x with another identity shows that NMI tells the two apart by source address alone.

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeToken } from '../helpers/azure.js';
import { accessTokenOf, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type WorldIdentity } from '../helpers/nmi-world.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const CHILD = `
import { ManagedIdentityCredential } from '@azure/identity';
const byDefault = await new ManagedIdentityCredential().getToken('https://vault.azure.net/.default');
const byClientId = await new ManagedIdentityCredential({ clientId: process.env.POD_CLIENT_ID }).getToken('https://storage.azure.com/.default');
const byResourceId = await new ManagedIdentityCredential({ resourceId: process.env.POD_RESOURCE_ID }).getToken('https://management.azure.com/.default');
process.stdout.write(JSON.stringify({ byDefault, byClientId, byResourceId }));
`;

interface ChildTokens {
  readonly byDefault: { token: string; expiresOnTimestamp: number };
  readonly byClientId: { token: string; expiresOnTimestamp: number };
  readonly byResourceId: { token: string; expiresOnTimestamp: number };
}

function runSdkChild(env: Record<string, string>): Promise<ChildTokens> {
  const clean = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^(AZURE_|IDENTITY_|MSI_|IMDS_)/.test(k)),
  ) as Record<string, string>;
  return new Promise((resolve, reject) => {
    // The SDK has no timeout of its own (sdk-notes §2): bound the child instead.
    execFile(process.execPath, ['--input-type=module', '-e', CHILD], { cwd: ROOT, env: { ...clean, ...env }, timeout: 30_000 }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`SDK child failed: ${stderr || error.message}`, { cause: error }));
      resolve(JSON.parse(stdout) as ChildTokens);
    });
  });
}

describe('ManagedIdentityCredential against NMI', () => {
  let world: NmiWorld;
  let sdkPodId: WorldIdentity;
  let neighbourId: WorldIdentity;

  beforeAll(async () => {
    world = await startNmiWorld({ compute: 'vmss' });
    sdkPodId = await world.managedIdentity('sdk-id');
    neighbourId = await world.managedIdentity('neighbour-id');
    await world.assign(await world.pod('sdk-app', '127.0.0.1'), sdkPodId);
    await world.assign(await world.pod('neighbour', '127.0.1.101'), neighbourId);
  });
  afterAll(async () => {
    await world?.stop();
  });

  it('gets its own pod’s token for the default identity, by client id and by resource id', async () => {
    world.azure.emulator.clearRequestLog();
    const tokens = await runSdkChild({
      AZURE_POD_IDENTITY_AUTHORITY_HOST: world.nmiUrl,
      POD_CLIENT_ID: sdkPodId.clientId,
      POD_RESOURCE_ID: sdkPodId.resourceId,
    });
    const cases = [
      [tokens.byDefault, VAULT],
      [tokens.byClientId, 'https://storage.azure.com'],
      [tokens.byResourceId, 'https://management.azure.com'],
    ] as const;
    for (const [token, audience] of cases) {
      const claims = decodeToken(token.token);
      expect(claims.appid).toBe(sdkPodId.clientId);
      expect(claims.oid).toBe(sdkPodId.principalId);
      expect(claims.aud).toBe(audience);
      // The SDK read expires_on: a token that it thinks is already expired would be a broken body.
      expect(token.expiresOnTimestamp).toBeGreaterThan(Date.now() + 60_000);
    }
    // NMI fetched them from the node's IMDS for the pod's identity only.
    const imdsCalls = world.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token');
    expect(imdsCalls.length).toBe(3);
    expect(imdsCalls.every((e) => e.target.endsWith(`:${sdkPodId.clientId}`))).toBe(true);

    // Meanwhile the neighbour on another address still gets its own.
    const neighbour = await world.call('127.0.1.101', `${TOKEN_PATH}?resource=${encodeURIComponent(VAULT)}`);
    expect(decodeToken(accessTokenOf(neighbour)).appid).toBe(neighbourId.clientId);
  }, 40_000);
});
