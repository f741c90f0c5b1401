// CustomResourceDefinition objects: validation, the resource types they register, and the status the
// apiextensions controllers would write.

import type { StatusCause } from './errors.js';
import { isObject, type JsonObject } from './json.js';
import { ALL_VERBS, type ResourceType } from './resources.js';
import { compileSchema } from './schema.js';
import type { PrinterColumn } from './table.js';
import { errorMessage } from '../../common/errors.js';

/** Problems with a CRD, in the wording of the real validation (a subset of it). */
export function validateCrd(crd: JsonObject): StatusCause[] {
  const causes: StatusCause[] = [];
  const req = (field: string): void => void causes.push({ reason: 'FieldValueRequired', message: 'Required value', field });
  const spec = isObject(crd.spec) ? crd.spec : undefined;
  if (!spec) {
    req('spec');
    return causes;
  }
  const names = isObject(spec.names) ? spec.names : {};
  const group = typeof spec.group === 'string' ? spec.group : '';
  const plural = typeof names.plural === 'string' ? names.plural : '';
  if (!group) req('spec.group');
  if (!plural) req('spec.names.plural');
  if (typeof names.kind !== 'string' || !names.kind) req('spec.names.kind');
  if (spec.scope !== 'Namespaced' && spec.scope !== 'Cluster') {
    causes.push({ reason: 'FieldValueNotSupported', message: `Unsupported value: ${JSON.stringify(spec.scope ?? '')}: supported values: "Cluster", "Namespaced"`, field: 'spec.scope' });
  }
  const name = isObject(crd.metadata) ? crd.metadata.name : undefined;
  if (group && plural && name !== `${plural}.${group}`) {
    causes.push({ reason: 'FieldValueInvalid', message: `Invalid value: ${JSON.stringify(name ?? '')}: must be spec.names.plural+"."+spec.group`, field: 'metadata.name' });
  }
  const versions = Array.isArray(spec.versions) ? spec.versions.filter(isObject) : [];
  if (versions.length === 0) req('spec.versions');
  const storage = versions.filter((v) => v.storage === true).length;
  if (versions.length > 0 && storage !== 1) {
    causes.push({ reason: 'FieldValueInvalid', message: `Invalid value: []apiextensions.CustomResourceDefinitionVersion: must have exactly one version marked as storage version`, field: 'spec.versions' });
  }
  versions.forEach((v, i) => {
    const schema = isObject(v.schema) ? v.schema.openAPIV3Schema : undefined;
    if (!isObject(schema)) req(`spec.versions[${i}].schema.openAPIV3Schema`);
    else {
      try {
        compileSchema(schema);
      } catch (err) {
        causes.push({ reason: 'FieldValueInvalid', message: `Invalid value: "object": ${errorMessage(err)}`, field: `spec.versions[${i}].schema.openAPIV3Schema` });
      }
    }
  });
  return causes;
}

/** Resource types for every served version of a (valid) CRD. */
export function crdResourceTypes(crd: JsonObject): ResourceType[] {
  const spec = crd.spec as JsonObject;
  const names = spec.names as JsonObject;
  const crdName = String((crd.metadata as JsonObject).name);
  const kind = String(names.kind);
  const versions = (spec.versions as JsonObject[]).filter((v) => isObject(v) && v.served !== false);
  return versions.map((v) => {
    const schema = (v.schema as JsonObject).openAPIV3Schema as JsonObject;
    const sub = isObject(v.subresources) ? v.subresources : {};
    return {
      group: String(spec.group),
      version: String(v.name),
      plural: String(names.plural),
      singular: typeof names.singular === 'string' && names.singular ? names.singular : kind.toLowerCase(),
      kind,
      listKind: typeof names.listKind === 'string' && names.listKind ? names.listKind : `${kind}List`,
      namespaced: spec.scope === 'Namespaced',
      shortNames: stringList(names.shortNames),
      categories: stringList(names.categories),
      verbs: ALL_VERBS,
      statusSubresource: isObject(sub.status),
      strategicMerge: false,
      generation: true,
      schema: compileSchema(schema),
      printerColumns: printerColumns(v.additionalPrinterColumns),
      crdName,
    };
  });
}

/** What the naming and establishing controllers write into a CRD's status. */
export function establishedStatus(crd: JsonObject, now: string): JsonObject {
  const spec = crd.spec as JsonObject;
  const versions = (spec.versions as JsonObject[]).filter(isObject);
  const condition = (type: string, reason: string, message: string): JsonObject => ({
    type,
    status: 'True',
    lastTransitionTime: now,
    reason,
    message,
  });
  return {
    conditions: [
      condition('NamesAccepted', 'NoConflicts', 'no conflicts found'),
      condition('Established', 'InitialNamesAccepted', 'the initial names have been accepted'),
    ],
    acceptedNames: spec.names as JsonObject,
    storedVersions: versions.filter((v) => v.storage === true).map((v) => String(v.name)),
  };
}

function printerColumns(v: unknown): PrinterColumn[] {
  if (!Array.isArray(v)) return [];
  return v.filter(isObject).map((c) => ({
    name: String(c.name ?? ''),
    type: String(c.type ?? 'string'),
    format: typeof c.format === 'string' ? c.format : undefined,
    description: typeof c.description === 'string' ? c.description : undefined,
    priority: typeof c.priority === 'number' ? c.priority : 0,
    jsonPath: String(c.jsonPath ?? ''),
  }));
}

function stringList(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}
