import { describe, expect, it } from 'vitest';
import { routeRequest } from '../../src/nmi/core/routes.js';
import { upstreamTarget } from '../../src/nmi/adapters/proxy.js';

describe('only origin-form request targets reach routing', () => {
  it.each([
    'http://169.254.169.254/metadata/instance',
    'HTTP://169.254.169.254/metadata/instance',
    'http:/metadata/instance',
    '//169.254.169.254/metadata/instance',
    '/\\169.254.169.254/metadata/instance',
    '169.254.169.254:80',
    '*',
    'metadata/instance',
    '',
  ])('refuses %s with or without --block-instance-metadata', (target) => {
    expect(routeRequest(target, { blockInstanceMetadata: true }).kind).toBe('invalid');
    expect(routeRequest(target, { blockInstanceMetadata: false }).kind).toBe('invalid');
  });

  it('still routes the origin-form instance path', () => {
    expect(routeRequest('/metadata/instance', { blockInstanceMetadata: true }).kind).toBe('instance-blocked');
    expect(routeRequest('/metadata/instance', { blockInstanceMetadata: false }).kind).toBe('proxy');
  });
});

describe('the proxy forwards the parsed, normalised target only', () => {
  it('keeps path and query of an origin-form target', () => {
    expect(upstreamTarget('/metadata/instance/compute/tagsList?api-version=2021-02-01')).toBe('/metadata/instance/compute/tagsList?api-version=2021-02-01');
  });

  it.each(['http://evil.example/metadata/instance', '//evil.example/x', '/\\evil.example/x', '*'])('never forwards %s', (target) => {
    expect(upstreamTarget(target)).toBeUndefined();
  });
});
