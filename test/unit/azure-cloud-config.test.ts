import { describe, expect, it } from 'vitest';
import {
  armScope,
  CloudConfigError,
  needsEnvironmentFile,
  parseAzureJson,
  parseCloudConfig,
  resolveCloudEnvironment,
} from '../../src/azure/cloud-config.js';

const spJson = JSON.stringify({
  cloud: 'AzurePublicCloud',
  tenantId: 'tenant-1',
  aadClientId: 'client-1',
  aadClientSecret: 'secret-1',
  subscriptionId: 'sub-1',
  resourceGroup: 'rg-1',
  vmType: 'vmss',
  securityGroupName: 'nsg',
  location: 'westeurope', // unknown keys are ignored
});

describe('parseCloudConfig from azure.json', () => {
  it('reads a service-principal config', () => {
    const c = parseCloudConfig({ fileText: spJson });
    expect(c.auth).toEqual({ kind: 'servicePrincipal', clientId: 'client-1', clientSecret: 'secret-1' });
    expect(c).toMatchObject({ tenantId: 'tenant-1', subscriptionId: 'sub-1', resourceGroup: 'rg-1', vmType: 'vmss' });
    expect(c.environment.resourceManagerEndpoint).toBe('https://management.azure.com');
    expect(c.environment.activeDirectoryEndpoint).toBe('https://login.microsoftonline.com');
    expect(armScope(c.environment)).toBe('https://management.azure.com/.default');
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('reads a managed-identity config with a user-assigned client id', () => {
    const c = parseCloudConfig({
      fileText: JSON.stringify({
        cloud: 'AzureUSGovernmentCloud',
        subscriptionId: 's',
        resourceGroup: 'g',
        useManagedIdentityExtension: true,
        userAssignedIdentityID: 'mic-client-id',
      }),
    });
    expect(c.auth).toEqual({ kind: 'managedIdentity', userAssignedIdentityId: 'mic-client-id' });
    expect(armScope(c.environment)).toBe('https://management.usgovcloudapi.net/.default');
    expect(c.environment.isPublicCloud).toBe(false);
  });

  it('uses the system-assigned identity when userAssignedIdentityID is empty', () => {
    const c = parseCloudConfig({
      fileText: 'cloud: AzureChinaCloud\nsubscriptionId: s\nresourceGroup: g\nuseManagedIdentityExtension: true\n',
    });
    expect(c.auth).toEqual({ kind: 'managedIdentity' });
    expect(c.environment.activeDirectoryEndpoint).toBe('https://login.chinacloudapi.cn');
  });

  it('names the missing key', () => {
    const noSecret = JSON.stringify({ ...JSON.parse(spJson), aadClientSecret: '' });
    expect(() => parseCloudConfig({ fileText: noSecret, filePath: '/etc/kubernetes/azure.json' })).toThrow(
      /\/etc\/kubernetes\/azure\.json.*"aadClientSecret" is required/,
    );
    const noRg = JSON.stringify({ ...JSON.parse(spJson), resourceGroup: undefined });
    expect(() => parseCloudConfig({ fileText: noRg })).toThrow(/"resourceGroup" is required/);
  });

  it('keys are exact-case, as the original: a capitalised key is not read', () => {
    const wrongCase = JSON.stringify({ ...JSON.parse(spJson), subscriptionId: undefined, SubscriptionId: 'x' });
    expect(() => parseCloudConfig({ fileText: wrongCase })).toThrow(/"subscriptionId" is required/);
  });

  it('rejects malformed files with the cause attached', () => {
    try {
      parseAzureJson('{"cloud": ', 'azure.json');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(CloudConfigError);
      expect((err as Error).cause).toBeDefined();
    }
    expect(() => parseAzureJson('[1,2]')).toThrow(/object at the top level/);
    expect(() => parseAzureJson('{"useManagedIdentityExtension": "maybe"}')).toThrow(/true or false/);
  });
});

describe('parseCloudConfig from env vars (no azure.json)', () => {
  it('reads the admin-secret variables; USE_MSI is case-insensitive "true"', () => {
    const c = parseCloudConfig({
      env: { CLOUD: 'azurepubliccloud', SUBSCRIPTION_ID: 's', RESOURCE_GROUP: 'g', USE_MSI: 'TRUE', USER_ASSIGNED_MSI_CLIENT_ID: 'cid', VM_TYPE: 'vm' },
    });
    expect(c.auth).toEqual({ kind: 'managedIdentity', userAssignedIdentityId: 'cid' });
    expect(c.vmType).toBe('vm');
  });

  it('falls back to the service principal when USE_MSI is not "true" and names the missing env var', () => {
    expect(() => parseCloudConfig({ env: { CLOUD: 'AzurePublicCloud', SUBSCRIPTION_ID: 's', RESOURCE_GROUP: 'g', USE_MSI: 'yes' } })).toThrow(
      /TENANT_ID is required/,
    );
  });
});

describe('cloud environments', () => {
  it('fails on an empty or unknown cloud, as go-autorest does', () => {
    expect(() => resolveCloudEnvironment('')).toThrow(/"cloud"/);
    expect(() => resolveCloudEnvironment('MarsCloud')).toThrow(/unknown cloud "MarsCloud"/);
  });

  it('knows the German cloud and the go-autorest aliases', () => {
    expect(resolveCloudEnvironment('AzureGermanCloud').resourceManagerEndpoint).toBe('https://management.microsoftazure.de');
    expect(resolveCloudEnvironment('AzureCloud').name).toBe('AzurePublicCloud');
  });

  it('reads AzureStackCloud from the environment file', () => {
    expect(needsEnvironmentFile('azurestackcloud')).toBe(true);
    expect(() => resolveCloudEnvironment('AzureStackCloud')).toThrow(/AZURE_ENVIRONMENT_FILEPATH/);
    const env = resolveCloudEnvironment(
      'AzureStackCloud',
      JSON.stringify({
        name: 'AzureStackCloud',
        resourceManagerEndpoint: 'https://management.local.azurestack.external/',
        activeDirectoryEndpoint: 'https://login.microsoftonline.com/',
        tokenAudience: 'https://management.adfs.azurestack.local/abc',
      }),
    );
    expect(env).toMatchObject({
      resourceManagerEndpoint: 'https://management.local.azurestack.external',
      activeDirectoryEndpoint: 'https://login.microsoftonline.com',
      resourceManagerAudience: 'https://management.adfs.azurestack.local/abc',
      isPublicCloud: false,
    });
    expect(() => resolveCloudEnvironment('AzureStackCloud', '{"activeDirectoryEndpoint":"https://x"}')).toThrow(/"resourceManagerEndpoint"/);
  });

  it('custom endpoints replace the cloud (emulator) and must be https', () => {
    const c = parseCloudConfig({
      fileText: spJson,
      customEndpoints: { resourceManagerEndpoint: 'https://127.0.0.1:4443/', activeDirectoryEndpoint: 'https://127.0.0.1:4443', imdsEndpoint: 'http://127.0.0.1:5555' },
    });
    expect(c.environment).toMatchObject({
      resourceManagerEndpoint: 'https://127.0.0.1:4443',
      resourceManagerAudience: 'https://management.azure.com',
      imdsEndpoint: 'http://127.0.0.1:5555',
      isPublicCloud: false,
    });
    expect(() =>
      parseCloudConfig({ fileText: spJson, customEndpoints: { resourceManagerEndpoint: 'http://127.0.0.1:1', activeDirectoryEndpoint: 'https://x' } }),
    ).toThrow(/must use https/);
  });
});
