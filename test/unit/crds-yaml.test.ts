// The four CRD manifests: they parse, carry the original's group, names, scope and printer columns, and their
// schemas declare both the camelCase fields and the legacy capitalised spellings we accept.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { GROUP, Kinds, Plurals, VERSION } from '../../src/crds/names.js';

const CRD_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'config', 'crd');

interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema;
  items?: Schema;
  nullable?: boolean;
  format?: string;
  'x-kubernetes-embedded-resource'?: boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  enum?: unknown[];
}

interface Crd {
  apiVersion: string;
  kind: string;
  metadata: { name: string; annotations?: Record<string, string> };
  spec: {
    group: string;
    scope: string;
    names: { kind: string; listKind: string; plural: string; singular: string; shortNames?: string[] };
    versions: Array<{
      name: string;
      served: boolean;
      storage: boolean;
      subresources?: { status?: object };
      additionalPrinterColumns?: Array<{ name: string; type: string; jsonPath: string }>;
      schema: { openAPIV3Schema: Schema };
    }>;
  };
}

function load(file: string): Crd {
  const docs = YAML.parseAllDocuments(readFileSync(join(CRD_DIR, file), 'utf8'));
  expect(docs).toHaveLength(1);
  expect(docs[0]?.errors).toEqual([]);
  return docs[0]?.toJS() as Crd;
}

function at(schema: Schema, path: string): Schema {
  let node: Schema | undefined = schema;
  for (const key of path.split('.')) {
    node = node?.properties?.[key];
    if (node === undefined) throw new Error(`schema has no ${path} (stopped at ${key})`);
  }
  return node;
}

const CASES = [
  { file: 'azureidentity.yaml', kind: Kinds.AzureIdentity, plural: Plurals.AzureIdentity, singular: 'azureidentity' },
  { file: 'azureidentitybinding.yaml', kind: Kinds.AzureIdentityBinding, plural: Plurals.AzureIdentityBinding, singular: 'azureidentitybinding' },
  { file: 'azureassignedidentity.yaml', kind: Kinds.AzureAssignedIdentity, plural: Plurals.AzureAssignedIdentity, singular: 'azureassignedidentity' },
  { file: 'azurepodidentityexception.yaml', kind: Kinds.AzurePodIdentityException, plural: Plurals.AzurePodIdentityException, singular: 'azurepodidentityexception' },
] as const;

describe.each(CASES)('$file', ({ file, kind, plural, singular }) => {
  const crd = load(file);
  const version = crd.spec.versions[0];

  it('is a v1 CRD of the original group, names and scope, with no short names', () => {
    expect(crd.apiVersion).toBe('apiextensions.k8s.io/v1');
    expect(crd.kind).toBe('CustomResourceDefinition');
    expect(crd.metadata.name).toBe(`${plural}.${GROUP}`);
    expect(crd.metadata.annotations?.['api-approved.kubernetes.io']).toBe('unapproved');
    expect(crd.spec.group).toBe('aadpodidentity.k8s.io');
    expect(crd.spec.scope).toBe('Namespaced');
    expect(crd.spec.names).toEqual({ kind, listKind: `${kind}List`, plural, singular });
  });

  it('serves and stores only v1', () => {
    expect(crd.spec.versions).toHaveLength(1);
    expect(version).toMatchObject({ name: VERSION, served: true, storage: true });
  });

  it('has a structural schema that never preserves unknown fields', () => {
    const text = JSON.stringify(version?.schema);
    expect(text).not.toContain('x-kubernetes-preserve-unknown-fields');
    const root = version?.schema.openAPIV3Schema as Schema;
    expect(root.type).toBe('object');
    expect(at(root, 'spec').type).toBe('object');
    expect(at(root, 'spec.metadata').type).toBe('object');
    expect(at(root, 'status.metadata').type).toBe('object');
    // Every node with properties is an object, every node has a type (structural rule).
    const visit = (s: Schema, path: string): void => {
      expect(s.type, path).toBeDefined();
      for (const [k, child] of Object.entries(s.properties ?? {})) visit(child, `${path}.${k}`);
      if (s.items) visit(s.items, `${path}[]`);
      if (s.additionalProperties) visit(s.additionalProperties, `${path}{}`);
    };
    visit(root, '');
  });
});

describe('AzureIdentity CRD', () => {
  const crd = load('azureidentity.yaml');
  const root = crd.spec.versions[0]?.schema.openAPIV3Schema as Schema;

  it('prints Type, ClientID and Age like the original, with our Mode column before Age', () => {
    expect(crd.spec.versions[0]?.additionalPrinterColumns).toEqual([
      { name: 'Type', type: 'string', jsonPath: '.spec.type' },
      { name: 'ClientID', type: 'string', jsonPath: '.spec.clientID' },
      { name: 'Mode', type: 'string', description: 'Attached (empty) or Federated.', jsonPath: '.spec.mode' },
      { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
    ]);
  });

  it('declares spec.mode as the enum Attached | Federated, with no legacy spelling (the field is new)', () => {
    expect(at(root, 'spec.mode')).toMatchObject({ type: 'string', enum: ['Attached', 'Federated'] });
    expect(root.properties?.spec?.properties?.Mode).toBeUndefined();
  });

  it('declares the camelCase fields with the original types', () => {
    expect(at(root, 'spec.type').type).toBe('integer');
    for (const f of ['resourceID', 'clientID', 'tenantID', 'adEndpoint', 'adResourceID']) {
      expect(at(root, `spec.${f}`).type, f).toBe('string');
    }
    expect(at(root, 'spec.auxiliaryTenantIDs')).toMatchObject({ type: 'array', nullable: true, items: { type: 'string' } });
    expect(at(root, 'spec.clientPassword.name').type).toBe('string');
    expect(at(root, 'spec.clientPassword.namespace').type).toBe('string');
    expect(at(root, 'spec.replicas')).toMatchObject({ type: 'integer', nullable: true });
    expect(at(root, 'status.availableReplicas').type).toBe('integer');
  });

  it('declares the legacy capitalised spellings so the API server keeps them', () => {
    expect(at(root, 'spec.Type').type).toBe('integer');
    for (const f of ['ResourceID', 'ClientID', 'ClientId', 'TenantID', 'ADEndpoint', 'ADResourceID']) {
      expect(at(root, `spec.${f}`).type, f).toBe('string');
    }
    expect(at(root, 'spec.AuxiliaryTenantIDs')).toMatchObject({ type: 'array', items: { type: 'string' } });
    for (const p of ['spec.ClientPassword', 'spec.clientPassword']) {
      for (const f of ['name', 'namespace', 'Name', 'Namespace']) expect(at(root, `${p}.${f}`).type).toBe('string');
    }
  });

  it('has no status subresource, like the original', () => {
    expect(crd.spec.versions[0]?.subresources?.status).toBeUndefined();
  });
});

describe('AzureIdentityBinding CRD', () => {
  const crd = load('azureidentitybinding.yaml');
  const root = crd.spec.versions[0]?.schema.openAPIV3Schema as Schema;

  it('prints AzureIdentity, Selector and Age like the original', () => {
    expect(crd.spec.versions[0]?.additionalPrinterColumns).toEqual([
      { name: 'AzureIdentity', type: 'string', jsonPath: '.spec.azureIdentity' },
      { name: 'Selector', type: 'string', jsonPath: '.spec.selector' },
      { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
    ]);
  });

  it('declares both spellings of azureIdentity, selector and weight', () => {
    for (const f of ['azureIdentity', 'selector', 'AzureIdentity', 'Selector']) expect(at(root, `spec.${f}`).type).toBe('string');
    expect(at(root, 'spec.weight').type).toBe('integer');
    expect(at(root, 'spec.Weight').type).toBe('integer');
  });
});

describe('AzurePodIdentityException CRD', () => {
  const crd = load('azurepodidentityexception.yaml');
  const root = crd.spec.versions[0]?.schema.openAPIV3Schema as Schema;

  it('declares podLabels and PodLabels as string maps', () => {
    for (const f of ['podLabels', 'PodLabels']) {
      expect(at(root, `spec.${f}`)).toEqual(expect.objectContaining({ type: 'object', additionalProperties: { type: 'string' } }));
    }
    expect(crd.spec.versions[0]?.additionalPrinterColumns).toBeUndefined();
  });
});

describe('AzureAssignedIdentity CRD', () => {
  const crd = load('azureassignedidentity.yaml');
  const version = crd.spec.versions[0];
  const root = version?.schema.openAPIV3Schema as Schema;

  it('has a status subresource (our divergence: MIC writes status through /status)', () => {
    expect(version?.subresources).toEqual({ status: {} });
    expect(version?.additionalPrinterColumns).toBeUndefined();
  });

  it('embeds the identity and the binding as resources, with the original field names', () => {
    expect(at(root, 'spec.azureIdentityRef')['x-kubernetes-embedded-resource']).toBe(true);
    expect(at(root, 'spec.azureBindingRef')['x-kubernetes-embedded-resource']).toBe(true);
    for (const f of ['pod', 'podNamespace', 'nodename']) expect(at(root, `spec.${f}`).type).toBe('string');
    expect(at(root, 'status.status').type).toBe('string');
    expect(at(root, 'status.availableReplicas').type).toBe('integer');
  });

  it('lets a verbatim copy of a legacy identity or binding survive inside the refs', () => {
    const idSpec = at(root, 'spec.azureIdentityRef.spec');
    const standalone = at(load('azureidentity.yaml').spec.versions[0]?.schema.openAPIV3Schema as Schema, 'spec');
    expect(idSpec).toEqual(standalone);
    const bSpec = at(root, 'spec.azureBindingRef.spec');
    expect(bSpec).toEqual(at(load('azureidentitybinding.yaml').spec.versions[0]?.schema.openAPIV3Schema as Schema, 'spec'));
  });
});
