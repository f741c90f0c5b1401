import { describe, expect, it } from 'vitest';
import {
  canonicalResourceId,
  isUserAssignedIdentityId,
  parseComputeTarget,
  parseProviderId,
  parseResourceId,
  parseUserAssignedIdentityId,
  ResourceIdError,
  sameResourceId,
} from '../../src/azure/resource-id.js';

const notNested = '/subscriptions/asdf/resourceGroups/qwerty/providers/testCompute/myComputeObjectType/testComputeResource';
const nested = `${notNested}/someNestedResource/myNestedResource`;
const uami = '/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-1';

describe('parseResourceId', () => {
  it.each([
    ['empty string', ''],
    ['just a string', 'asdf'],
    ['partial match', '/subscriptions/asdf/resourceGroups/qwery'],
    ['provider without type and name', '/subscriptions/a/resourceGroups/b/providers/Microsoft.Compute'],
    ['nested type without name', `${notNested}/virtualMachines`],
    ['empty segment', '/subscriptions//resourceGroups/b/providers/p/t/n'],
    ['wrong keyword', '/subscription/a/resourceGroups/b/providers/p/t/n'],
  ])('rejects %s', (_desc, id) => {
    expect(() => parseResourceId(id)).toThrow(ResourceIdError);
  });

  it('parses a top-level resource', () => {
    expect(parseResourceId(notNested)).toEqual({
      subscriptionId: 'asdf',
      resourceGroup: 'qwerty',
      provider: 'testCompute',
      resourceType: 'myComputeObjectType',
      resourceName: 'testComputeResource',
      children: [],
    });
  });

  it('keeps the top-level type and name of a nested resource and lists the children', () => {
    const r = parseResourceId(nested);
    expect(r.resourceType).toBe('myComputeObjectType');
    expect(r.resourceName).toBe('testComputeResource');
    expect(r.children).toEqual([{ type: 'someNestedResource', name: 'myNestedResource' }]);
  });

  it('accepts the fixed segments in any case (resourcegroups, PROVIDERS)', () => {
    const r = parseResourceId('/SUBSCRIPTIONS/s/resourcegroups/g/PROVIDERS/Microsoft.Compute/virtualMachines/vm');
    expect(r.resourceGroup).toBe('g');
    expect(r.resourceName).toBe('vm');
  });
});

describe('user-assigned identity IDs', () => {
  it('parses one and gives a lower-cased key', () => {
    expect(parseUserAssignedIdentityId(uami)).toEqual({
      subscriptionId: 'sub-1',
      resourceGroup: 'rg-1',
      name: 'id-1',
      key: uami.toLowerCase(),
    });
  });

  it('accepts lower-case provider and type (as ARM errors print them)', () => {
    expect(isUserAssignedIdentityId(uami.toLowerCase())).toBe(true);
  });

  it.each([
    ['a VM ID', '/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm'],
    ['a nested path under an identity', `${uami}/federatedIdentityCredentials/x`],
    ['an empty string', ''],
    ['a client ID', '00000000-0000-0000-0000-000000000001'],
  ])('rejects %s', (_d, id) => {
    expect(isUserAssignedIdentityId(id)).toBe(false);
  });
});

describe('compute targets and provider IDs', () => {
  it('parses a VM provider ID', () => {
    expect(
      parseProviderId('azure:///subscriptions/fakeSub/resourceGroups/fakeGroup/providers/Microsoft.Compute/virtualMachines/node3'),
    ).toEqual({ subscriptionId: 'fakeSub', resourceGroup: 'fakeGroup', kind: 'vm', name: 'node3' });
  });

  it('parses a VMSS instance provider ID into the scale set and the instance', () => {
    expect(
      parseProviderId(
        'azure:///subscriptions/fakeSub/resourceGroups/fakeGroup/providers/Microsoft.Compute/virtualMachineScaleSets/node4/virtualMachines/0',
      ),
    ).toEqual({ subscriptionId: 'fakeSub', resourceGroup: 'fakeGroup', kind: 'vmss', name: 'node4', instanceId: '0' });
  });

  it('parses a bare scale-set ID and a VM ID without the scheme', () => {
    expect(parseComputeTarget('/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachineScaleSets/ss')).toEqual({
      subscriptionId: 's',
      resourceGroup: 'g',
      kind: 'vmss',
      name: 'ss',
    });
    expect(parseComputeTarget('/subscriptions/s/resourcegroups/g/providers/microsoft.compute/VIRTUALMACHINES/vm1').kind).toBe('vm');
  });

  it.each([
    ['a non-Azure provider ID', 'aws:///us-east-1a/i-123'],
    ['an empty provider ID', ''],
    ['a kind provider ID', 'kind://docker/kind/kind-control-plane'],
  ])('rejects %s', (_d, id) => {
    expect(() => parseProviderId(id)).toThrow(ResourceIdError);
  });

  it('rejects compute resources that are not VMs or scale sets', () => {
    expect(() => parseComputeTarget('/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/d1')).toThrow(/not a VM or scale-set/);
    expect(() => parseComputeTarget(uami)).toThrow(/not a compute resource/);
  });
});

describe('canonical keys', () => {
  it('compares IDs case-insensitively and ignores a trailing slash', () => {
    expect(canonicalResourceId(`${uami}/`)).toBe(canonicalResourceId(uami.toUpperCase()));
    expect(sameResourceId(uami, uami.replace('resourceGroups', 'resourcegroups'))).toBe(true);
    expect(sameResourceId(uami, uami.replace('id-1', 'id-2'))).toBe(false);
  });
});
