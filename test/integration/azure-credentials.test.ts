// armCredential against the emulator's AAD and IMDS: the token is issued to the principal azure.json names.
// One managed-identity test per file: msal-node fixes the MI source process-wide.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseCloudConfig } from '../../src/azure/cloud-config.js';
import { armCredential } from '../../src/azure/credentials.js';
import { decodeToken, servicePrincipalCloudConfig, startTestAzure, type TestAzure } from '../helpers/azure.js';

let az: TestAzure;
beforeEach(async () => {
  az = await startTestAzure();
});
afterEach(async () => {
  await az?.stop();
});

describe('armCredential', () => {
  it('gets an ARM token for the service principal of azure.json', async () => {
    const e = az.emulator;
    const config = servicePrincipalCloudConfig(az);
    const token = await armCredential(config, { caPem: e.caPem }).getToken(`${config.environment.resourceManagerAudience}/.default`);
    const claims = decodeToken(token!.token);
    expect(claims.appid).toBe(az.servicePrincipal.clientId);
    expect(claims.aud.replace(/\/$/, '')).toBe('https://management.azure.com');
  });

  it('gets an ARM token for the user-assigned identity of azure.json through the redirected IMDS', async () => {
    const e = az.emulator;
    const mic = e.createUserAssignedIdentity(az.resourceGroup, 'mic-identity');
    const other = e.createUserAssignedIdentity(az.resourceGroup, 'other-identity');
    e.createVm(az.resourceGroup, 'node-1', { userAssigned: [mic.id, other.id] });
    const imds = await e.startImds({ vm: 'node-1' });
    try {
      const config = parseCloudConfig({
        env: {
          CLOUD: 'AzurePublicCloud',
          SUBSCRIPTION_ID: e.subscriptionId,
          RESOURCE_GROUP: az.resourceGroup,
          USE_MSI: 'true',
          USER_ASSIGNED_MSI_CLIENT_ID: mic.clientId,
        },
        customEndpoints: { resourceManagerEndpoint: e.url, activeDirectoryEndpoint: e.url, imdsEndpoint: imds.url },
      });
      const token = await armCredential(config, { caPem: e.caPem }).getToken('https://management.azure.com/.default');
      const claims = decodeToken(token!.token);
      expect(claims.appid).toBe(mic.clientId);
      expect(claims.oid).toBe(mic.principalId);
    } finally {
      await imds.stop();
    }
  });
});
