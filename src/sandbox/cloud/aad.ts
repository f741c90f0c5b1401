import type { IncomingMessage, ServerResponse } from 'node:http';
import { X509Certificate, randomUUID, timingSafeEqual } from 'node:crypto';
import { errors as joseErrors, jwtVerify } from 'jose';
import type { Logger } from 'pino';
import type { FaultBook } from './faults.js';
import { checkFederatedAssertion, type FederatedAssertionContext } from './federated-assertion.js';
import { readBody, sendJson, type RoutedRequest } from './http.js';
import type { IssuedToken, TokenSigner } from './signer.js';
import type { ServicePrincipal, UserAssignedIdentity, World } from './world.js';
import { realClock } from '../../common/clock.js';

export interface AadContext {
  readonly world: World;
  readonly faults: FaultBook;
  readonly signer: TokenSigner;
  readonly log: Logger;
  readonly baseUrl: () => string;
  readonly tokenLifetimeSeconds: number;
  /** Federated exchange for user-assigned identities: issuer keys, clock, skew, propagation delay. */
  readonly federation: FederatedAssertionContext;
  /** Lifetime of tokens issued to managed identities (the IMDS lifetime: same token as IMDS would give). */
  readonly managedIdentityTokenLifetimeSeconds: number;
}

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** Microsoft Entra ID (AAD) v2 endpoints, plus the v1 token endpoint: client credentials with secret or certificate. */
export class AadApi {
  readonly #ctx: AadContext;

  constructor(ctx: AadContext) {
    this.#ctx = ctx;
  }

  route(req: IncomingMessage, res: ServerResponse, url: URL): RoutedRequest | undefined {
    const method = (req.method ?? 'GET').toUpperCase();
    let m = /^\/([^/]+)\/(v2\.0\/)?\.well-known\/openid-configuration$/i.exec(url.pathname);
    if (m && method === 'GET') {
      const tenant = decodeURIComponent(m[1] ?? '');
      return { operation: 'aad_openid', target: tenant, dialect: 'aad', handle: async () => this.#openidConfiguration(res, tenant) };
    }
    m = /^\/([^/]+)\/discovery\/(v2\.0\/)?keys$/i.exec(url.pathname);
    if (m && method === 'GET') {
      return {
        operation: 'aad_keys',
        target: decodeURIComponent(m[1] ?? ''),
        dialect: 'aad',
        handle: async () => sendJson(res, 200, await this.#ctx.signer.jwks()),
      };
    }
    m = /^\/([^/]+)\/oauth2\/(v2\.0\/)?token$/i.exec(url.pathname);
    if (m && method === 'POST') {
      const tenant = decodeURIComponent(m[1] ?? '');
      const v2 = m[2] !== undefined;
      return {
        operation: 'aad_token',
        target: tenant,
        dialect: 'aad',
        handle: () => this.#token(req, res, url, tenant, v2),
      };
    }
    return undefined;
  }

  #openidConfiguration(res: ServerResponse, tenant: string): void {
    if (!this.#ctx.world.knowsTenant(tenant)) return aadError(res, 400, 'invalid_tenant', 90002, tenantNotFound(tenant));
    const base = `${this.#ctx.baseUrl()}/${tenant}`;
    sendJson(res, 200, {
      token_endpoint: `${base}/oauth2/v2.0/token`,
      token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
      jwks_uri: `${base}/discovery/v2.0/keys`,
      response_modes_supported: ['query', 'fragment', 'form_post'],
      subject_types_supported: ['pairwise'],
      id_token_signing_alg_values_supported: ['RS256'],
      response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
      scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
      issuer: `${base}/v2.0`,
      request_uri_parameter_supported: false,
      authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
      device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
      end_session_endpoint: `${base}/oauth2/v2.0/logout`,
      tenant_region_scope: null,
      cloud_instance_name: 'microsoftonline.com',
      cloud_graph_host_name: 'graph.windows.net',
      msgraph_host: 'graph.microsoft.com',
    });
  }

  async #token(req: IncomingMessage, res: ServerResponse, url: URL, tenant: string, v2: boolean): Promise<void> {
    const form = new URLSearchParams(await readBody(req));
    const grantType = form.get('grant_type');
    if (grantType !== 'client_credentials') {
      return aadError(res, 400, 'unsupported_grant_type', 70003, `AADSTS70003: The app requested an unsupported grant type '${grantType ?? ''}'.`);
    }
    if (!this.#ctx.world.knowsTenant(tenant)) return aadError(res, 400, 'invalid_request', 90002, tenantNotFound(tenant));
    const clientId = form.get('client_id');
    if (!clientId) return aadError(res, 400, 'invalid_request', 900144, missingParameter('client_id'));

    let resource: string;
    if (v2) {
      const scope = form.get('scope');
      if (!scope) return aadError(res, 400, 'invalid_request', 900144, missingParameter('scope'));
      const scopes = scope.split(' ').filter((s) => s !== '' && !['openid', 'profile', 'offline_access'].includes(s));
      const first = scopes[0] ?? '';
      if (scopes.length !== 1 || !first.endsWith('/.default')) {
        return aadError(
          res,
          400,
          'invalid_scope',
          1002012,
          `AADSTS1002012: The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`,
        );
      }
      resource = first.slice(0, -'/.default'.length);
    } else {
      const r = form.get('resource');
      if (!r) return aadError(res, 400, 'invalid_request', 900144, missingParameter('resource'));
      resource = r;
    }

    const sp = this.#ctx.world.servicePrincipal(clientId);
    const identity = sp ? undefined : this.#ctx.world.identityByClientId(clientId);
    if (identity && identity.tenantId.toLowerCase() === tenant.toLowerCase()) {
      return this.#federatedToken(res, form, identity, resource, v2);
    }
    if (!sp || !sp.tenantIds.some((t) => t.toLowerCase() === tenant.toLowerCase())) {
      return aadError(
        res,
        400,
        'unauthorized_client',
        700016,
        `AADSTS700016: Application with identifier '${clientId}' was not found in the directory '${tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.`,
      );
    }
    const credentialError = await this.#checkClientCredential(form, sp, url, tenant);
    if (credentialError) return aadError(res, 401, 'invalid_client', credentialError.code, credentialError.message);

    const lifetime = this.#ctx.tokenLifetimeSeconds;
    const token = await this.#ctx.signer.issue({ appId: sp.clientId, objectId: sp.objectId, tenantId: tenant }, resource, lifetime);
    this.#ctx.log.debug({ tenant, resource }, 'aad token issued');
    sendTokenResponse(res, v2, lifetime, token, resource);
  }

  /** A user-assigned identity as an app: only a federated assertion matching one of its credentials gets a token. */
  async #federatedToken(res: ServerResponse, form: URLSearchParams, identity: UserAssignedIdentity, resource: string, v2: boolean): Promise<void> {
    const assertion = form.get('client_assertion');
    if (form.get('client_secret') !== null) {
      return aadError(
        res,
        401,
        'invalid_client',
        7000215,
        `AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${identity.clientId}'.`,
      );
    }
    if (assertion === null) {
      return aadError(res, 401, 'invalid_client', 7000218, "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
    }
    if (form.get('client_assertion_type') !== JWT_BEARER) {
      return aadError(res, 401, 'invalid_client', 7000219, `AADSTS7000219: 'client_assertion_type' must be '${JWT_BEARER}'.`);
    }
    const world = this.#ctx.world;
    const refusal = await checkFederatedAssertion(this.#ctx.federation, world.federatedCredentials(identity.id), assertion);
    if (refusal) {
      this.#ctx.log.debug({ identity: identity.name, code: refusal.code }, 'federated assertion refused');
      return aadError(res, refusal.status, refusal.error, refusal.code, refusal.message);
    }
    const lifetime = this.#ctx.managedIdentityTokenLifetimeSeconds;
    const token = await this.#ctx.signer.issue(
      { appId: identity.clientId, objectId: identity.principalId, tenantId: identity.tenantId, managedIdentityResourceId: identity.id },
      resource,
      lifetime,
      this.#ctx.federation.clock.now(),
    );
    this.#ctx.log.debug({ identity: identity.name, resource }, 'aad token issued for a federated assertion');
    sendTokenResponse(res, v2, lifetime, token, resource);
  }

  async #checkClientCredential(
    form: URLSearchParams,
    sp: ServicePrincipal,
    url: URL,
    tenant: string,
  ): Promise<{ code: number; message: string } | undefined> {
    const secret = form.get('client_secret');
    const assertion = form.get('client_assertion');
    if (secret !== null) {
      if (sp.secret !== undefined && safeEqual(secret, sp.secret)) return undefined;
      return {
        code: 7000215,
        message: `AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${sp.clientId}'.`,
      };
    }
    if (assertion === null) {
      return { code: 7000218, message: "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'." };
    }
    if (form.get('client_assertion_type') !== JWT_BEARER) {
      return { code: 7000219, message: `AADSTS7000219: 'client_assertion_type' must be '${JWT_BEARER}'.` };
    }
    if (!sp.certificatePem) {
      return { code: 700027, message: 'AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application.' };
    }
    const audiences = tokenEndpointAudiences(url, tenant);
    try {
      const cert = new X509Certificate(firstCertificate(sp.certificatePem));
      await jwtVerify(assertion, cert.publicKey, {
        algorithms: ['PS256', 'RS256'],
        issuer: sp.clientId,
        subject: sp.clientId,
        audience: audiences,
        requiredClaims: ['exp'],
        clockTolerance: 300,
      });
      return undefined;
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) {
        return { code: 700024, message: 'AADSTS700024: Client assertion is not within its valid time range.' };
      }
      if (err instanceof joseErrors.JWTClaimValidationFailed) {
        if (err.claim === 'aud') {
          return { code: 700212, message: `AADSTS700212: The audience of the client assertion is invalid. It must be the token endpoint '${audiences[0]}'.` };
        }
        if (err.claim === 'iss' || err.claim === 'sub') {
          return { code: 700021, message: "AADSTS700021: Client assertion application identifier doesn't match 'client_id' parameter." };
        }
        if (err.claim === 'nbf') return { code: 700024, message: 'AADSTS700024: Client assertion is not within its valid time range.' };
      }
      if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
        return { code: 700027, message: 'AADSTS700027: Client assertion failed signature validation.' };
      }
      return { code: 50027, message: `AADSTS50027: JWT token is invalid or malformed. ${(err as Error).message}` };
    }
  }
}

function sendTokenResponse(res: ServerResponse, v2: boolean, lifetime: number, token: IssuedToken, resource: string): void {
  if (v2) {
    return sendJson(res, 200, { token_type: 'Bearer', expires_in: lifetime, ext_expires_in: lifetime, access_token: token.accessToken });
  }
  sendJson(res, 200, {
    token_type: 'Bearer',
    expires_in: String(lifetime),
    ext_expires_in: String(lifetime),
    expires_on: String(token.expiresOn),
    not_before: String(token.issuedAt - 300),
    resource,
    access_token: token.accessToken,
  });
}

function aadError(res: ServerResponse, status: number, error: string, code: number, description: string): void {
  const traceId = randomUUID();
  const correlationId = randomUUID();
  const timestamp = new Date(realClock.now()).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  sendJson(res, status, {
    error,
    error_description: `${description}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${timestamp}`,
    error_codes: [code],
    timestamp,
    trace_id: traceId,
    correlation_id: correlationId,
    error_uri: `https://login.microsoftonline.com/error?code=${code}`,
  });
}

function missingParameter(name: string): string {
  return `AADSTS900144: The request body must contain the following parameter: '${name}'.`;
}

function tenantNotFound(tenant: string): string {
  return `AADSTS90002: Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.`;
}

/** The token endpoint URL as a client may have written it: our host, by IP or as localhost, v2 or v1 path. */
function tokenEndpointAudiences(url: URL, tenant: string): string[] {
  const hosts = new Set([url.host, `127.0.0.1:${url.port}`, `localhost:${url.port}`]);
  const out: string[] = [];
  for (const host of hosts) {
    out.push(`https://${host}/${tenant}/oauth2/v2.0/token`, `https://${host}/${tenant}/oauth2/token`);
  }
  return out;
}

function firstCertificate(pem: string): string {
  const m = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new Error('no certificate in the registered PEM');
  return m[0];
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
