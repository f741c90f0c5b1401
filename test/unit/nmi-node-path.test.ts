// The node path's refusals (issue 10 §4), as pure functions: an excepted or MIC pod never reaches an identity that an
// AzureIdentity declares, whether it names it or IMDS picks it.
import { describe, expect, it } from 'vitest';
import type { AzureIdentity } from '../../src/crds/types.js';
import {
  clientIdKey,
  declaredIdentitiesOf,
  nodeRequestRefusal,
  nodeTokenRefusal,
  resourceIdKey,
} from '../../src/nmi/core/node-path.js';
import { IDENTITY_NOT_FOUND } from '../../src/nmi/core/imds-body.js';
import { tokenIdentityOf } from '../../src/nmi/tokens/claims.js';

const NOT_FOUND = { status: 400, body: IDENTITY_NOT_FOUND };

const RES = (name: string) => `/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${name}`;

function identity(namespace: string, name: string, clientID: string, resourceID = RES(name)): AzureIdentity {
  return {
    namespace, name, uid: `uid-${name}`, resourceVersion: '1', labels: {}, annotations: {}, creationTimestamp: '',
    finalizers: [], deleting: false, type: 0, invalidType: '', clientID, clientPassword: null, tenantID: '', resourceID,
    auxiliaryTenantIDs: [], adEndpoint: '', adResourceID: '', namespaced: false,
  };
}

const declared = declaredIdentitiesOf([
  identity('team-a', 'payments', 'AAAAAAAA-1111-2222-3333-444444444444'),
  identity('team-c', 'sp-only', 'cccccccc-0000-0000-0000-000000000000', ''),
]);

describe('nodeRequestRefusal', () => {
  it('refuses a client_id an AzureIdentity declares, in any case and with braces', () => {
    for (const clientId of ['aaaaaaaa-1111-2222-3333-444444444444', 'AAAAAAAA-1111-2222-3333-444444444444', '{aaaaaaaa-1111-2222-3333-444444444444}']) {
      const r = nodeRequestRefusal({ clientId }, declared);
      expect(r, clientId).toMatchObject(NOT_FOUND);
      expect(r?.reason).toContain('team-a/payments');
      // What the pod is told names no other namespace's object.
      // IMDS's own answer for an identity the VM does not have: the pod cannot tell "declared elsewhere" from "nowhere".
      expect(r?.body).toEqual(IDENTITY_NOT_FOUND);
      expect(JSON.stringify(r?.body)).not.toContain('team-a');
      expect(JSON.stringify(r?.body)).not.toContain('payments');
    }
  });

  it('refuses a resource ID an AzureIdentity declares, however its case and slashes are spelled', () => {
    for (const resourceId of [RES('payments'), RES('payments').toUpperCase(), `${RES('payments')}/`, RES('payments').replace('/providers', '//providers')]) {
      expect(nodeRequestRefusal({ resourceId }, declared), resourceId).toMatchObject(NOT_FOUND);
    }
  });

  it('lets through what nobody declares, and a request naming no identity (the token is checked after)', () => {
    expect(nodeRequestRefusal({ clientId: 'dddddddd-0000-0000-0000-000000000000' }, declared)).toBeUndefined();
    expect(nodeRequestRefusal({ resourceId: RES('node-agent') }, declared)).toBeUndefined();
    expect(nodeRequestRefusal({}, declared)).toBeUndefined();
  });
});

describe('nodeTokenRefusal', () => {
  it('refuses a token for a declared client ID, whichever way it was asked for', () => {
    expect(nodeTokenRefusal({ clientId: 'aaaaaaaa-1111-2222-3333-444444444444' }, declared)?.reason).toContain('team-a/payments');
    expect(nodeTokenRefusal({ clientId: 'CCCCCCCC-0000-0000-0000-000000000000' }, declared)).toMatchObject(NOT_FOUND);
  });

  it('refuses a token whose xms_mirid is declared, for an AzureIdentity that names only a resource ID', () => {
    const byResource = declaredIdentitiesOf([identity('team-a', 'res-only', '', RES('res-only'))]);
    expect(nodeTokenRefusal({ clientId: 'eeeeeeee-0000-0000-0000-000000000000', resourceId: RES('res-only').toLowerCase() }, byResource)).toMatchObject(NOT_FOUND);
    expect(nodeTokenRefusal({ clientId: 'eeeeeeee-0000-0000-0000-000000000000', resourceId: RES('node') }, byResource)).toBeUndefined();
  });

  it('serves the node’s own identity, and refuses a token it cannot attribute only while something is declared', () => {
    expect(nodeTokenRefusal({ clientId: 'dddddddd-0000-0000-0000-000000000000' }, declared)).toBeUndefined();
    expect(nodeTokenRefusal({}, declared)).toMatchObject(NOT_FOUND);
    expect(nodeTokenRefusal({ clientId: ' ' }, declared)).toMatchObject(NOT_FOUND);
    expect(nodeTokenRefusal({}, declaredIdentitiesOf([]))).toBeUndefined();
  });
});

describe('declaredIdentitiesOf', () => {
  it('keys by normalised IDs and names the same owner whatever the order', () => {
    const a = identity('team-b', 'copy', 'AAAAAAAA-1111-2222-3333-444444444444');
    const b = identity('team-a', 'payments', 'aaaaaaaa-1111-2222-3333-444444444444');
    expect(declaredIdentitiesOf([a, b]).clientIds.get(clientIdKey(a.clientID))).toBe('team-a/payments');
    expect(declaredIdentitiesOf([b, a]).clientIds.get(clientIdKey(a.clientID))).toBe('team-a/payments');
    expect(declaredIdentitiesOf([b]).resourceIds.has(resourceIdKey(RES('payments').toUpperCase()))).toBe(true);
  });
});

describe('tokenIdentityOf', () => {
  const jwt = (claims: object) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;
  it('reads IMDS’s client_id, else the JWT’s appid or azp, and the JWT’s xms_mirid', () => {
    expect(tokenIdentityOf({ clientId: 'from-imds', accessToken: jwt({ appid: 'from-jwt', xms_mirid: '/r' }) })).toEqual({ clientId: 'from-imds', resourceId: '/r' });
    expect(tokenIdentityOf({ accessToken: jwt({ appid: 'v1-app' }) })).toEqual({ clientId: 'v1-app' });
    expect(tokenIdentityOf({ accessToken: jwt({ azp: 'v2-app' }) })).toEqual({ clientId: 'v2-app' });
    expect(tokenIdentityOf({ accessToken: 'not-a-jwt' })).toEqual({});
    expect(tokenIdentityOf({ accessToken: 'a.!!!.c' })).toEqual({});
    expect(tokenIdentityOf({ accessToken: jwt({ appid: 7 }) })).toEqual({});
  });
});
