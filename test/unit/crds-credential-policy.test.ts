import { describe, expect, it } from 'vitest';
import { KNOWN_CLOUD_AUTHORITIES } from '../../src/azure/cloud-config.js';
import {
  adEndpointRefusal,
  allowedAuthoritySet,
  authorityOrigin,
  credentialRefusals,
  parseAllowedAdEndpoints,
  secretNamespaceRefusal,
} from '../../src/crds/credential-policy.js';
import type { AzureIdentity } from '../../src/crds/types.js';

const clouds = allowedAuthoritySet(KNOWN_CLOUD_AUTHORITIES);

describe('authorityOrigin', () => {
  it('reduces an authority to its https origin: host lower-cased, default port dropped, path ignored', () => {
    expect(authorityOrigin('https://login.microsoftonline.com/')).toEqual({ ok: true, origin: 'https://login.microsoftonline.com' });
    expect(authorityOrigin(' HTTPS://Login.MicrosoftOnline.COM:443/tenant/ ')).toEqual({ ok: true, origin: 'https://login.microsoftonline.com' });
    expect(authorityOrigin('https://127.0.0.1:8443/x')).toEqual({ ok: true, origin: 'https://127.0.0.1:8443' });
  });
  it('refuses http, user information and text that is not a URL', () => {
    expect(authorityOrigin('http://login.microsoftonline.com')).toMatchObject({ ok: false });
    expect(authorityOrigin('https://user:pw@login.microsoftonline.com')).toMatchObject({ ok: false });
    expect(authorityOrigin('https://login.microsoftonline.com@evil.example')).toMatchObject({ ok: false });
    expect(authorityOrigin('login.microsoftonline.com')).toMatchObject({ ok: false });
    expect(authorityOrigin('')).toMatchObject({ ok: false });
  });
});

describe('adEndpointRefusal', () => {
  it('allows an empty adEndpoint (the default authority) and the four known clouds, however spelt', () => {
    for (const ok of ['', '  ', 'https://login.microsoftonline.com/', 'https://login.chinacloudapi.cn', 'https://LOGIN.microsoftonline.us:443', 'https://login.microsoftonline.de/']) {
      expect(adEndpointRefusal(ok, { allowedAuthorities: clouds }), ok).toBeUndefined();
    }
  });
  it('refuses lookalikes, other ports, http and user information, naming the flag', () => {
    for (const bad of [
      'https://login.microsoftonline.com.evil.example/',
      'https://login.microsoftonline.com:8443/',
      'http://login.microsoftonline.com/',
      'https://login.microsoftonline.com@127.0.0.1/',
      'https://evil.example/',
      'not a url',
    ]) {
      const r = adEndpointRefusal(bad, { allowedAuthorities: clouds });
      expect(r?.code, bad).toBe('AdEndpointNotAllowed');
      expect(r?.reason).toContain('--allowed-ad-endpoints');
    }
  });
  it('allows what the admin listed, compared as origins', () => {
    const allowed = allowedAuthoritySet([...KNOWN_CLOUD_AUTHORITIES, 'https://adfs.contoso.example/adfs/']);
    expect(adEndpointRefusal('https://ADFS.contoso.example:443/adfs', { allowedAuthorities: allowed })).toBeUndefined();
    expect(adEndpointRefusal('https://adfs.contoso.example:444/adfs', { allowedAuthorities: allowed })).toBeDefined();
  });
});

describe('parseAllowedAdEndpoints', () => {
  it('normalises each entry and reports the bad ones', () => {
    const errors: string[] = [];
    expect(parseAllowedAdEndpoints(['https://A.example/', 'http://b.example', 'https://u@c.example', ''], errors)).toEqual(['https://a.example']);
    expect(errors).toHaveLength(2);
    expect(errors.every((e) => e.startsWith('--allowed-ad-endpoints: '))).toBe(true);
  });
});

describe('secretNamespaceRefusal and credentialRefusals', () => {
  const policy = { allowCrossNamespaceSecrets: false, allowedAuthorities: clouds };
  const identity = (over: Partial<AzureIdentity>): AzureIdentity => ({
    namespace: 'team-b', name: 'sp', uid: 'u', resourceVersion: '1', labels: {}, annotations: {}, creationTimestamp: '',
    finalizers: [], deleting: false, type: 1, invalidType: '', resourceID: '', clientID: 'c', tenantID: 't',
    clientPassword: { name: 's', namespace: 'team-b' }, auxiliaryTenantIDs: [], adEndpoint: '', adResourceID: '', namespaced: false,
    ...over,
  });

  it("refuses a Secret in another namespace unless the admin allows it", () => {
    const ref = { name: 's', namespace: 'team-a' };
    expect(secretNamespaceRefusal('team-b', ref, policy)?.reason).toContain('--allow-cross-namespace-secrets');
    expect(secretNamespaceRefusal('team-b', ref, { allowCrossNamespaceSecrets: true })).toBeUndefined();
    expect(secretNamespaceRefusal('team-b', { name: 's', namespace: 'team-b' }, policy)).toBeUndefined();
  });

  it('checks service principals only, and reports both problems', () => {
    expect(credentialRefusals(identity({}), policy)).toEqual([]);
    const both = credentialRefusals(identity({ clientPassword: { name: 's', namespace: 'team-a' }, adEndpoint: 'https://evil.example' }), policy);
    expect(both.map((r) => r.code)).toEqual(['CrossNamespaceSecret', 'AdEndpointNotAllowed']);
    expect(credentialRefusals(identity({ type: 2, adEndpoint: 'https://evil.example' }), policy)).toHaveLength(1);
    expect(credentialRefusals(identity({ type: 0, clientPassword: { name: 's', namespace: 'team-a' }, adEndpoint: 'https://evil.example' }), policy)).toEqual([]);
  });
});
