import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { AadApi } from './aad.js';
import { realClock, type Clock } from '../../common/clock.js';
import { IssuerKeys } from './issuer-keys.js';
import { adminRoute } from './admin.js';
import { ArmApi, type LroMode } from './arm.js';
import { FaultBook, type EmulatorOperation, type FaultSpec, type RequestLogEntry } from './faults.js';
import { runRouted, sendJson } from './http.js';
import { closeServer, listen, startImdsListener, type ImdsListener, type ImdsTarget } from './imds.js';
import { TokenSigner, type IssuedToken, type JsonWebKeySet } from './signer.js';
import { tlsMaterialFor } from './tls.js';
import { findRole, type RoleAssignmentRecord } from './rbac.js';
import {
  World,
  type ComputeKind,
  type ComputeResource,
  type ComputeSpec,
  type IdentityState,
  type ServicePrincipalSpec,
  type UserAssignedIdentity,
  type VmssSpec,
  type FederatedCredential,
} from './world.js';

export { FEDERATED_CREDENTIAL_NAME, MAX_FEDERATED_CREDENTIALS_PER_IDENTITY } from './fic.js';
export type { FederatedCredential } from './world.js';
export { decodeToken, type AccessTokenClaims } from './signer.js';
export { ARM_AUDIENCES, type LroMode } from './arm.js';
export { BUILT_IN_ROLES, actionMatches, permissionsAllow, scopeCovers, type RoleDefinition, type RolePermission } from './rbac.js';
export { EMULATOR_OPERATIONS, type EmulatorOperation, type FaultSpec, type RequestLogEntry } from './faults.js';
export type { ImdsListener, ImdsTarget } from './imds.js';
export type { ComputeSpec, IdentityState, ServicePrincipalSpec, UserAssignedIdentity, VmssSpec } from './world.js';

export interface AzureEmulatorOptions {
  /** Address to bind the HTTPS server to (default 127.0.0.1). */
  readonly host?: string;
  readonly port?: number;
  readonly tenantId?: string;
  readonly subscriptionId?: string;
  /** Where to write the CA PEM; a temporary file (removed on stop) otherwise. */
  readonly caFile?: string;
  /** 'sync': PATCH answers 200 with the result; 'async' (default): 202 + Azure-AsyncOperation. */
  readonly lro?: LroMode;
  /** Lifetime of every token issued (IMDS and AAD); default 86399 s for IMDS and 3599 s for AAD, as Azure. */
  readonly tokenLifetimeSeconds?: number;
  readonly location?: string;
  readonly logger?: Logger;
  /** Time for the federated-credential code (propagation, assertion validity, issuer cache); real time by default. */
  readonly clock?: Clock;
  /** Latency per operation from the start, as `setLatency` sets it (e.g. `{ vmss_patch: 2000, fic_put: 1000 }`). */
  readonly latencyMs?: Partial<Record<EmulatorOperation, number>>;
  readonly federation?: FederationOptions;
}

/** Azure AD's side of workload identity federation. */
export interface FederationOptions {
  /** A new or changed federated credential is seen by Azure AD only after this long (AADSTS70021 meanwhile). Default 0. */
  readonly propagationMs?: number;
  /** Cache lifetime of an issuer's discovery document and keys. Default 5 min; a token naming an unknown kid refetches. */
  readonly issuerCacheTtlMs?: number;
  /** Bound on each fetch from an issuer; past it the exchange fails with AADSTS90061. Default 5 s. */
  readonly issuerFetchTimeoutMs?: number;
  /** CA certificates (PEM) trusted for issuers' HTTPS besides the public roots (the sandbox API server's CA). */
  readonly trustedIssuerCas?: readonly string[];
  /** Allowed clock difference on an assertion's nbf/exp, seconds. Default 300. */
  readonly clockSkewSeconds?: number;
}

/** Input for creating a federated identity credential through the admin API. */
export interface FederatedCredentialSpec {
  readonly issuer: string;
  readonly subject: string;
  readonly audiences?: readonly string[];
}

/** A role assignment as the admin API reports it. */
export interface RoleAssignmentInfo {
  readonly id: string;
  readonly name: string;
  readonly scope: string;
  readonly principalId: string;
  readonly roleDefinitionId: string;
  readonly roleName: string;
}

function assignmentInfo(a: RoleAssignmentRecord): RoleAssignmentInfo {
  return {
    id: `${a.scope === '/' ? '' : a.scope}/providers/Microsoft.Authorization/roleAssignments/${a.name}`,
    name: a.name,
    scope: a.scope,
    principalId: a.principalId,
    roleDefinitionId: `/providers/Microsoft.Authorization/roleDefinitions/${a.roleDefinitionName}`,
    roleName: findRole(a.roleDefinitionName)?.roleName ?? a.roleDefinitionName,
  };
}

/** A VM or VMSS as the admin API reports it. */
export interface ComputeInfo {
  readonly kind: ComputeKind;
  readonly id: string;
  readonly name: string;
  readonly resourceGroup: string;
  readonly location: string;
  readonly vmId: string;
  readonly instances: readonly string[];
  readonly identity: IdentityState;
  readonly provisioningState: string;
  /** Exactly what `GET` on the resource returns. */
  readonly armJson: Record<string, unknown>;
}

export type ComputeTarget =
  | { readonly vm: string; readonly resourceGroup?: string }
  | { readonly vmss: string; readonly resourceGroup?: string };

export interface AzureEmulator {
  /** HTTPS base URL: ARM endpoint and AAD authority host at once. */
  readonly url: string;
  readonly caPem: string;
  readonly caFile: string;
  readonly tenantId: string;
  readonly subscriptionId: string;

  createResourceGroup(name: string, location?: string): { id: string; name: string; location: string };
  createVm(rg: string, name: string, spec?: ComputeSpec): ComputeInfo;
  createVmss(rg: string, name: string, spec: VmssSpec): ComputeInfo;
  getVm(rg: string, name: string): ComputeInfo | undefined;
  getVmss(rg: string, name: string): ComputeInfo | undefined;
  /** Replaces a VM/VMSS's identities behind the product's back (as `az vm identity remove` would). */
  setVmIdentities(target: ComputeTarget, userAssigned: readonly string[], opts?: { systemAssigned?: boolean }): void;
  createUserAssignedIdentity(rg: string, name: string, opts?: { clientId?: string; principalId?: string }): UserAssignedIdentity;
  deleteUserAssignedIdentity(idOrRg: string, name?: string): boolean;
  getUserAssignedIdentity(id: string): UserAssignedIdentity | undefined;
  /** Creates or replaces a federated identity credential behind ARM's back (no latency, no 409, no limit check). */
  putFederatedCredential(identityId: string, name: string, spec: FederatedCredentialSpec): FederatedCredential;
  listFederatedCredentials(identityId: string): FederatedCredential[];
  deleteFederatedCredential(identityId: string, name: string): boolean;
  /** Sets the Azure AD propagation delay of new or changed federated credentials (ms; 0 = immediate). */
  setFederationPropagation(ms: number): void;
  /** Trusts a CA (PEM) for fetching issuers' discovery documents and keys. */
  trustIssuerCa(pem: string): void;
  /** Drops Azure AD's cached issuer metadata (the next exchange fetches again). */
  clearIssuerCache(): void;
  registerServicePrincipal(spec: ServicePrincipalSpec): { clientId: string; objectId: string; tenantId: string };
  /**
   * Assigns a built-in role (name or GUID) to a principal (object ID, or a service principal's / identity's client ID)
   * at a scope (a resource ID or prefix), as `az role assignment create` would; idempotent. ARM checks every request
   * against these assignments.
   */
  grantRole(principal: string, role: string, scope: string): RoleAssignmentInfo;
  /** Removes that role's assignments to the principal exactly at that scope; returns how many went. */
  revokeRole(principal: string, role: string, scope: string): number;
  listRoleAssignments(): RoleAssignmentInfo[];
  /** Whether ARM would let `principal` perform `action` at `scope` (what its role assignments allow). */
  checkAccess(principal: string, action: string, scope: string): boolean;
  /** Mints a token as AAD would (default: an ARM token for a fresh app in this tenant). */
  issueToken(opts?: { appId?: string; objectId?: string; tenantId?: string; audience?: string; lifetimeSeconds?: number }): Promise<IssuedToken>;
  jwks(): Promise<JsonWebKeySet>;
  injectFault(fault: FaultSpec): void;
  clearFaults(): void;
  setLatency(operation: EmulatorOperation, ms: number): void;
  setLroMode(mode: LroMode): void;
  requestLog(): readonly RequestLogEntry[];
  clearRequestLog(): void;
  /** Starts a plain-HTTP IMDS for one VM or scale-set instance (127.0.0.1:0 by default). */
  startImds(target: ImdsTarget, opts?: { host?: string; port?: number }): Promise<ImdsListener>;
  stop(): Promise<void>;
}

/** Starts the Azure emulator: one HTTPS server for ARM + AAD (+ /_admin), and IMDS listeners on demand. */
export async function startAzureEmulator(opts: AzureEmulatorOptions = {}): Promise<AzureEmulator> {
  const log = opts.logger ?? pino({ level: 'silent' });
  const host = opts.host ?? '127.0.0.1';
  const tenantId = opts.tenantId ?? randomUUID();
  const subscriptionId = opts.subscriptionId ?? randomUUID();
  const world = new World({ subscriptionId, tenantId, ...(opts.location ? { location: opts.location } : {}) });
  const faults = new FaultBook();
  const signerReady = TokenSigner.create(); // key generation runs on the thread pool while TLS material is made
  const tls = tlsMaterialFor([host]);
  const signer = await signerReady;
  let lroMode: LroMode = opts.lro ?? 'async';
  let baseUrl = '';

  const clock = opts.clock ?? realClock;
  for (const [op, ms] of Object.entries(opts.latencyMs ?? {})) faults.setLatency(op as EmulatorOperation, ms);
  const fed = opts.federation ?? {};
  let propagationMs = fed.propagationMs ?? 0;
  const trustedIssuerCas = [...(fed.trustedIssuerCas ?? [])];
  const issuerKeys = new IssuerKeys({
    clock,
    ttlMs: fed.issuerCacheTtlMs ?? 5 * 60_000,
    timeoutMs: fed.issuerFetchTimeoutMs ?? 5_000,
    trustedCas: () => trustedIssuerCas,
  });

  const arm = new ArmApi({ world, faults, signer, log, baseUrl: () => baseUrl, lroMode: () => lroMode, clock });
  const aad = new AadApi({
    world,
    faults,
    signer,
    log,
    baseUrl: () => baseUrl,
    tokenLifetimeSeconds: opts.tokenLifetimeSeconds ?? 3599,
    managedIdentityTokenLifetimeSeconds: opts.tokenLifetimeSeconds ?? 86399,
    federation: { clock, keys: issuerKeys, skewSeconds: fed.clockSkewSeconds ?? 300, propagationMs: () => propagationMs },
  });
  const imdsContext = { world, faults, signer, log, tokenLifetimeSeconds: opts.tokenLifetimeSeconds ?? 86399 };
  const imdsListeners = new Set<ImdsListener>();

  const server: HttpsServer = createHttpsServer({ key: tls.keyPem, cert: tls.certPem }, (req, res) => {
    handle(req, res).catch((err: unknown) => log.error({ err }, 'azure emulator handler failed'));
  });

  let caFile = opts.caFile;
  let tempDir: string | undefined;
  if (!caFile) {
    tempDir = await mkdtemp(join(tmpdir(), 'azure-emulator-'));
    caFile = join(tempDir, 'ca.pem');
  }
  await writeFile(caFile, tls.caPem, { mode: 0o644 });

  await listen(server, host, opts.port ?? 0);
  const { port } = server.address() as AddressInfo;
  const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  baseUrl = `https://${urlHost}:${port}`;

  const info = (c: ComputeResource): ComputeInfo => ({
    kind: c.kind,
    id: world.computeResourceId(c),
    name: c.name,
    resourceGroup: c.resourceGroup,
    location: c.location,
    vmId: c.vmId,
    instances: [...c.instances],
    identity: world.identityState(c),
    provisioningState: c.provisioningState,
    armJson: world.computeView(c),
  });

  const emulator: AzureEmulator = {
    url: baseUrl,
    caPem: tls.caPem,
    caFile,
    tenantId,
    subscriptionId,
    createResourceGroup: (name, location) => world.createResourceGroup(name, location),
    createVm: (rg, name, spec) => info(world.createVm(rg, name, spec)),
    createVmss: (rg, name, spec) => info(world.createVmss(rg, name, spec)),
    getVm: (rg, name) => {
      const c = world.compute('vm', rg, name);
      return c ? info(c) : undefined;
    },
    getVmss: (rg, name) => {
      const c = world.compute('vmss', rg, name);
      return c ? info(c) : undefined;
    },
    setVmIdentities: (target, userAssigned, o = {}) => {
      const c = 'vm' in target ? world.findCompute('vm', target.vm, target.resourceGroup) : world.findCompute('vmss', target.vmss, target.resourceGroup);
      if (!c) throw new Error(`no such ${'vm' in target ? `VM ${target.vm}` : `VMSS ${target.vmss}`}`);
      world.setIdentities(c, userAssigned, o.systemAssigned);
    },
    createUserAssignedIdentity: (rg, name, o) => world.createUserAssignedIdentity(rg, name, o),
    deleteUserAssignedIdentity: (idOrRg, name) => world.deleteUserAssignedIdentity(idOrRg, name),
    getUserAssignedIdentity: (id) => world.getUserAssignedIdentity(id),
    putFederatedCredential: (identityId, name, spec) => {
      if (!world.getUserAssignedIdentity(identityId)) throw new Error(`user-assigned identity ${identityId} does not exist`);
      const fic: FederatedCredential = {
        name,
        issuer: spec.issuer,
        subject: spec.subject,
        audiences: [...(spec.audiences ?? ['api://AzureADTokenExchange'])],
        changedAt: clock.now(),
      };
      world.putFederatedCredential(identityId, fic);
      return world.federatedCredential(identityId, name) ?? fic;
    },
    listFederatedCredentials: (identityId) => world.federatedCredentials(identityId),
    deleteFederatedCredential: (identityId, name) => world.deleteFederatedCredential(identityId, name),
    setFederationPropagation: (ms) => {
      propagationMs = Math.max(0, ms);
    },
    trustIssuerCa: (pem) => {
      if (!trustedIssuerCas.includes(pem)) trustedIssuerCas.push(pem);
    },
    clearIssuerCache: () => issuerKeys.clear(),
    registerServicePrincipal: (spec) => world.registerServicePrincipal(spec),
    grantRole: (principal, role, scope) => assignmentInfo(world.grantRole(principal, role, scope)),
    revokeRole: (principal, role, scope) => world.revokeRole(principal, role, scope),
    listRoleAssignments: () => world.roleAssignments().map(assignmentInfo),
    checkAccess: (principal, action, scope) => world.allows(world.resolvePrincipal(principal), action, scope),
    issueToken: (o = {}) =>
      signer.issue(
        { appId: o.appId ?? randomUUID(), objectId: o.objectId ?? randomUUID(), tenantId: o.tenantId ?? tenantId },
        o.audience ?? 'https://management.azure.com/',
        o.lifetimeSeconds ?? 3599,
      ),
    jwks: () => signer.jwks(),
    injectFault: (f) => faults.inject(f),
    clearFaults: () => faults.clearFaults(),
    setLatency: (op, ms) => faults.setLatency(op, ms),
    setLroMode: (mode) => {
      lroMode = mode;
    },
    requestLog: () => faults.requestLog(),
    clearRequestLog: () => faults.clearRequestLog(),
    startImds: async (target, o) => {
      const listener = await startImdsListener(imdsContext, target, o);
      const tracked: ImdsListener = {
        ...listener,
        stop: async () => {
          imdsListeners.delete(tracked);
          await listener.stop();
        },
      };
      imdsListeners.add(tracked);
      return tracked;
    },
    stop: async () => {
      arm.stop();
      await Promise.all([...imdsListeners].map((l) => l.stop()));
      await closeServer(server);
      if (tempDir) await rm(tempDir, { recursive: true, force: true });
    },
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      // Concatenated, not resolved: SDKs send `//subscriptions/...`, which URL resolution would read as a host.
      const raw = req.url ?? '/';
      url = new URL(raw.startsWith('/') ? `${baseUrl}${raw}` : raw, baseUrl);
    } catch {
      sendJson(res, 400, { error: { code: 'InvalidRequestUrl', message: 'The request URL is not valid.' } });
      return;
    }
    const routed =
      adminRoute(emulator, req, res, url) ??
      arm.route(req, res, url) ??
      aad.route(req, res, url) ?? {
        operation: 'unknown' as const,
        target: url.pathname,
        dialect: 'arm' as const,
        handle: async () => sendJson(res, 404, { error: { code: 'NotFound', message: `No route matches '${url.pathname}'.` } }),
      };
    await runRouted(routed, req, res, faults, (err) => log.error({ err, path: url.pathname }, 'azure emulator request failed'));
  }

  log.info({ url: baseUrl, tenantId, subscriptionId }, 'azure emulator listening');
  return emulator;
}
