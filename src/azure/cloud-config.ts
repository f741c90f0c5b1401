// The cloud provider config MIC authenticates to ARM with: `/etc/kubernetes/azure.json` (or the env vars of the
// "admin secret" deployment), resolved against a cloud environment. Pure: callers pass file text and an env record.
import { parse as parseYaml } from 'yaml';

/** Endpoints of one Azure cloud, as MIC needs them. URLs carry no trailing slash. */
export interface CloudEnvironment {
  readonly name: string;
  /** ARM base URL, e.g. https://management.azure.com */
  readonly resourceManagerEndpoint: string;
  /** AAD authority host, e.g. https://login.microsoftonline.com */
  readonly activeDirectoryEndpoint: string;
  /** Audience of ARM tokens; the scope asked for is `${audience}/.default`. */
  readonly resourceManagerAudience: string;
  /** Where managed-identity tokens come from; only set for the emulator (the SDK default is IMDS). */
  readonly imdsEndpoint?: string;
  /** True for the public cloud: only there may MSAL run its instance discovery. */
  readonly isPublicCloud: boolean;
}

/** An explicit endpoint set that replaces the named cloud (used to point MIC at the Azure emulator). */
export interface CustomEndpoints {
  readonly resourceManagerEndpoint: string;
  readonly activeDirectoryEndpoint: string;
  readonly imdsEndpoint?: string;
  /** Defaults to the public cloud's ARM audience: the emulator stands in for the public cloud and checks `aud` as it does. */
  readonly resourceManagerAudience?: string;
}

/** azure.json after parsing and validation. */
export interface AzureCloudConfig {
  readonly cloud: string;
  readonly environment: CloudEnvironment;
  readonly tenantId: string;
  readonly subscriptionId: string;
  readonly resourceGroup: string;
  readonly vmType: string;
  readonly securityGroupName: string;
  readonly auth: ArmAuth;
}

export type ArmAuth =
  | { readonly kind: 'servicePrincipal'; readonly clientId: string; readonly clientSecret: string }
  /** `userAssignedIdentityId` is a client ID (empty means system-assigned), as in the original. */
  | { readonly kind: 'managedIdentity'; readonly userAssignedIdentityId?: string };

export class CloudConfigError extends Error {
  override readonly name = 'CloudConfigError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export interface CloudConfigSources {
  /** Text of azure.json (`--cloudconfig`). When absent, the env vars are read instead, as the original does. */
  readonly fileText?: string;
  /** Where fileText came from, for error messages. */
  readonly filePath?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Text of the file named by AZURE_ENVIRONMENT_FILEPATH, needed only for AzureStackCloud. */
  readonly environmentFileText?: string;
  /** Overrides the named cloud's endpoints (emulator). */
  readonly customEndpoints?: CustomEndpoints;
}

/** The raw keys of azure.json (exact case, as the original's yaml.v2 struct tags). */
export interface RawAzureJson {
  cloud: string;
  tenantId: string;
  aadClientId: string;
  aadClientSecret: string;
  subscriptionId: string;
  resourceGroup: string;
  securityGroupName: string;
  vmType: string;
  useManagedIdentityExtension: boolean;
  userAssignedIdentityID: string;
}

/** Parses and validates the cloud config from azure.json text or, without it, from the env record. */
export function parseCloudConfig(sources: CloudConfigSources): AzureCloudConfig {
  const raw =
    sources.fileText !== undefined
      ? parseAzureJson(sources.fileText, sources.filePath ?? 'azure.json')
      : rawFromEnv(sources.env ?? {});
  const where = sources.fileText !== undefined ? (sources.filePath ?? 'azure.json') : 'environment';
  const environment = sources.customEndpoints
    ? customEnvironment(raw.cloud || 'Custom', sources.customEndpoints)
    : resolveCloudEnvironment(raw.cloud, sources.environmentFileText);

  const missing = (key: string, envKey: string): never => {
    const name = sources.fileText !== undefined ? `"${key}"` : envKey;
    throw new CloudConfigError(`cloud config (${where}): ${name} is required but missing or empty`);
  };
  if (!raw.subscriptionId) missing('subscriptionId', 'SUBSCRIPTION_ID');
  if (!raw.resourceGroup) missing('resourceGroup', 'RESOURCE_GROUP');

  let auth: ArmAuth;
  if (raw.useManagedIdentityExtension) {
    auth = raw.userAssignedIdentityID
      ? { kind: 'managedIdentity', userAssignedIdentityId: raw.userAssignedIdentityID }
      : { kind: 'managedIdentity' };
  } else {
    if (!raw.tenantId) missing('tenantId', 'TENANT_ID');
    if (!raw.aadClientId) missing('aadClientId', 'CLIENT_ID');
    if (!raw.aadClientSecret) missing('aadClientSecret', 'CLIENT_SECRET');
    auth = { kind: 'servicePrincipal', clientId: raw.aadClientId, clientSecret: raw.aadClientSecret };
  }

  return Object.freeze({
    cloud: raw.cloud,
    environment,
    tenantId: raw.tenantId,
    subscriptionId: raw.subscriptionId,
    resourceGroup: raw.resourceGroup,
    vmType: raw.vmType,
    securityGroupName: raw.securityGroupName,
    auth: Object.freeze(auth),
  });
}

/** azure.json is read as YAML (a JSON superset), keys in their exact case. Unknown keys are ignored. */
export function parseAzureJson(text: string, filePath = 'azure.json'): RawAzureJson {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new CloudConfigError(`cloud config ${filePath}: not valid JSON/YAML`, { cause: err });
  }
  if (doc === null || doc === undefined) doc = {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new CloudConfigError(`cloud config ${filePath}: expected an object at the top level`);
  }
  const obj = doc as Record<string, unknown>;
  const str = (key: keyof RawAzureJson): string => {
    const v = obj[key];
    if (v === undefined || v === null) return '';
    if (typeof v === 'string') return v.trim();
    if (typeof v === 'number') return String(v);
    throw new CloudConfigError(`cloud config ${filePath}: "${key}" must be a string`);
  };
  const bool = (key: keyof RawAzureJson): boolean => {
    const v = obj[key];
    if (v === undefined || v === null || v === '') return false;
    if (typeof v === 'boolean') return v;
    if (typeof v === 'string' && /^(true|false)$/i.test(v.trim())) return v.trim().toLowerCase() === 'true';
    throw new CloudConfigError(`cloud config ${filePath}: "${key}" must be true or false`);
  };
  return {
    cloud: str('cloud'),
    tenantId: str('tenantId'),
    aadClientId: str('aadClientId'),
    aadClientSecret: str('aadClientSecret'),
    subscriptionId: str('subscriptionId'),
    resourceGroup: str('resourceGroup'),
    securityGroupName: str('securityGroupName'),
    vmType: str('vmType'),
    useManagedIdentityExtension: bool('useManagedIdentityExtension'),
    userAssignedIdentityID: str('userAssignedIdentityID'),
  };
}

/** The env vars the original reads when no azure.json is given (admin-secret deployment). */
export function rawFromEnv(env: Readonly<Record<string, string | undefined>>): RawAzureJson {
  const get = (k: string): string => (env[k] ?? '').trim();
  return {
    cloud: get('CLOUD'),
    tenantId: get('TENANT_ID'),
    aadClientId: get('CLIENT_ID'),
    aadClientSecret: get('CLIENT_SECRET'),
    subscriptionId: get('SUBSCRIPTION_ID'),
    resourceGroup: get('RESOURCE_GROUP'),
    securityGroupName: '',
    vmType: get('VM_TYPE'),
    // The original: strings.EqualFold(USE_MSI, "True").
    useManagedIdentityExtension: get('USE_MSI').toLowerCase() === 'true',
    userAssignedIdentityID: get('USER_ASSIGNED_MSI_CLIENT_ID'),
  };
}

const PUBLIC_ARM_AUDIENCE = 'https://management.azure.com';

const KNOWN_CLOUDS: Readonly<Record<string, Omit<CloudEnvironment, 'imdsEndpoint'>>> = {
  AZUREPUBLICCLOUD: {
    name: 'AzurePublicCloud',
    resourceManagerEndpoint: 'https://management.azure.com',
    activeDirectoryEndpoint: 'https://login.microsoftonline.com',
    resourceManagerAudience: 'https://management.azure.com',
    isPublicCloud: true,
  },
  AZUREUSGOVERNMENTCLOUD: {
    name: 'AzureUSGovernmentCloud',
    resourceManagerEndpoint: 'https://management.usgovcloudapi.net',
    activeDirectoryEndpoint: 'https://login.microsoftonline.us',
    resourceManagerAudience: 'https://management.usgovcloudapi.net',
    isPublicCloud: false,
  },
  AZURECHINACLOUD: {
    name: 'AzureChinaCloud',
    resourceManagerEndpoint: 'https://management.chinacloudapi.cn',
    activeDirectoryEndpoint: 'https://login.chinacloudapi.cn',
    resourceManagerAudience: 'https://management.chinacloudapi.cn',
    isPublicCloud: false,
  },
  AZUREGERMANCLOUD: {
    name: 'AzureGermanCloud',
    resourceManagerEndpoint: 'https://management.microsoftazure.de',
    activeDirectoryEndpoint: 'https://login.microsoftonline.de',
    resourceManagerAudience: 'https://management.microsoftazure.de',
    isPublicCloud: false,
  },
};
/**
 * The AAD authority hosts of the clouds named above (public, US Government, China, Germany): the adEndpoint values
 * MIC and NMI accept without an admin's `--allowed-ad-endpoints`.
 */
export const KNOWN_CLOUD_AUTHORITIES: readonly string[] = Object.freeze(
  Object.values(KNOWN_CLOUDS).map((c) => c.activeDirectoryEndpoint),
);

// go-autorest's aliases for the same environments.
const ALIASES: Readonly<Record<string, string>> = { AZURECLOUD: 'AZUREPUBLICCLOUD', AZUREUSGOVERNMENT: 'AZUREUSGOVERNMENTCLOUD' };

export const AZURE_STACK_CLOUD = 'AzureStackCloud';

/** True when resolving this cloud needs the file named by AZURE_ENVIRONMENT_FILEPATH. */
export function needsEnvironmentFile(cloud: string): boolean {
  return cloud.trim().toUpperCase() === AZURE_STACK_CLOUD.toUpperCase();
}

/**
 * Cloud name (case-insensitive, as go-autorest) → endpoints. AzureStackCloud is read from the environment file
 * (go-autorest Environment JSON: resourceManagerEndpoint, activeDirectoryEndpoint, tokenAudience).
 */
export function resolveCloudEnvironment(cloud: string, environmentFileText?: string): CloudEnvironment {
  const key = cloud.trim().toUpperCase();
  if (key === '') {
    throw new CloudConfigError(
      'cloud config: "cloud" (env CLOUD) is required: one of AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud, AzureStackCloud',
    );
  }
  const known = KNOWN_CLOUDS[ALIASES[key] ?? key];
  if (known) return Object.freeze({ ...known });
  if (needsEnvironmentFile(cloud)) {
    if (environmentFileText === undefined) {
      throw new CloudConfigError(
        'cloud config: AzureStackCloud needs the environment file named by AZURE_ENVIRONMENT_FILEPATH',
      );
    }
    return parseEnvironmentFile(environmentFileText);
  }
  throw new CloudConfigError(`cloud config: unknown cloud "${cloud}"`);
}

/** Parses a go-autorest environment file (AzureStackCloud). */
export function parseEnvironmentFile(text: string): CloudEnvironment {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new CloudConfigError('cloud environment file: not valid JSON', { cause: err });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new CloudConfigError('cloud environment file: expected a JSON object');
  }
  const obj = doc as Record<string, unknown>;
  const req = (key: string): string => {
    const v = obj[key];
    if (typeof v !== 'string' || v.trim() === '') {
      throw new CloudConfigError(`cloud environment file: "${key}" is required but missing or empty`);
    }
    return v.trim();
  };
  const arm = httpsUrl(req('resourceManagerEndpoint'), 'resourceManagerEndpoint');
  const aad = httpsUrl(req('activeDirectoryEndpoint'), 'activeDirectoryEndpoint');
  const audience = typeof obj['tokenAudience'] === 'string' && obj['tokenAudience'].trim() !== ''
    ? trimSlash(obj['tokenAudience'].trim())
    : arm;
  const name = typeof obj['name'] === 'string' && obj['name'] !== '' ? obj['name'] : AZURE_STACK_CLOUD;
  return Object.freeze({
    name,
    resourceManagerEndpoint: arm,
    activeDirectoryEndpoint: aad,
    resourceManagerAudience: audience,
    isPublicCloud: false,
  });
}

/** A custom endpoint set (emulator). Instance discovery is off: it would go to the public cloud. */
export function customEnvironment(name: string, endpoints: CustomEndpoints): CloudEnvironment {
  const arm = httpsUrl(endpoints.resourceManagerEndpoint, 'resourceManagerEndpoint');
  const env: CloudEnvironment = {
    name,
    resourceManagerEndpoint: arm,
    activeDirectoryEndpoint: httpsUrl(endpoints.activeDirectoryEndpoint, 'activeDirectoryEndpoint'),
    resourceManagerAudience: trimSlash(endpoints.resourceManagerAudience ?? PUBLIC_ARM_AUDIENCE),
    isPublicCloud: false,
    ...(endpoints.imdsEndpoint ? { imdsEndpoint: trimSlash(endpoints.imdsEndpoint) } : {}),
  };
  return Object.freeze(env);
}

/** Scope to request ARM tokens with. */
export function armScope(env: CloudEnvironment): string {
  return `${env.resourceManagerAudience}/.default`;
}

// Both SDKs refuse bearer tokens and authorities over plain http, so fail at config time with a clear message.
function httpsUrl(value: string, key: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch (err) {
    throw new CloudConfigError(`cloud config: "${key}" is not a URL: ${value}`, { cause: err });
  }
  if (url.protocol !== 'https:') {
    throw new CloudConfigError(`cloud config: "${key}" must use https (the Azure SDKs refuse bearer tokens over http): ${value}`);
  }
  return trimSlash(value);
}

function trimSlash(s: string): string {
  return s.replace(/\/+$/, '');
}

/**
 * What differs between two cloud configs, as the names of azure.json keys (`aadClientSecret` when the secret changed;
 * never a value, so the list can be logged). Empty when nothing MIC uses changed.
 */
export function cloudConfigChanges(before: AzureCloudConfig, after: AzureCloudConfig): string[] {
  const changes: string[] = [];
  const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
  if (before.cloud !== after.cloud || !same(before.environment, after.environment)) changes.push('cloud');
  if (before.tenantId !== after.tenantId) changes.push('tenantId');
  if (before.subscriptionId !== after.subscriptionId) changes.push('subscriptionId');
  if (before.resourceGroup !== after.resourceGroup) changes.push('resourceGroup');
  const a = before.auth;
  const b = after.auth;
  if (a.kind !== b.kind) changes.push('useManagedIdentityExtension');
  if (a.kind === 'servicePrincipal' && b.kind === 'servicePrincipal') {
    if (a.clientId !== b.clientId) changes.push('aadClientId');
    if (a.clientSecret !== b.clientSecret) changes.push('aadClientSecret');
  }
  if (a.kind === 'managedIdentity' && b.kind === 'managedIdentity' && a.userAssignedIdentityId !== b.userAssignedIdentityId) {
    changes.push('userAssignedIdentityID');
  }
  return changes;
}
