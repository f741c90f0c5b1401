// The Kubernetes protobuf encoding (`application/vnd.kubernetes.protobuf`) for the one body a client-go typed client
// sends us that way and we must understand: kubectl create token's TokenRequest. The envelope is the `k8s\0` magic
// and runtime.Unknown {typeMeta=1 {apiVersion=1, kind=2}, raw=2, contentEncoding=3, contentType=4}.

import { badRequest } from './errors.js';
import type { JsonObject } from './json.js';

export const PROTOBUF_MEDIA_TYPE = 'application/vnd.kubernetes.protobuf';
const MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

/** A TokenRequest (authentication.k8s.io/v1) in protobuf, as the JSON object the same request would be. */
export function decodeTokenRequestProtobuf(body: Buffer): JsonObject {
  if (body.length < MAGIC.length || !body.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw badRequest('the object provided is unrecognized: provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]');
  }
  const unknown = fields(body.subarray(MAGIC.length));
  const typeMeta = fields(bytesOf(unknown, 1) ?? Buffer.alloc(0));
  const apiVersion = stringOf(typeMeta, 1) ?? '';
  const kind = stringOf(typeMeta, 2) ?? '';
  const out: JsonObject = { apiVersion, kind };
  const raw = fields(bytesOf(unknown, 2) ?? Buffer.alloc(0));
  // ObjectMeta: name=1, generateName=2, namespace=3, uid=5.
  const meta = fields(bytesOf(raw, 1) ?? Buffer.alloc(0));
  const metadata: JsonObject = {};
  for (const [field, key] of [[1, 'name'], [3, 'namespace'], [5, 'uid']] as const) {
    const v = stringOf(meta, field);
    if (v) metadata[key] = v;
  }
  out.metadata = metadata;
  // TokenRequestSpec: audiences=1 (repeated), boundObjectRef=3, expirationSeconds=4.
  const specFields = fields(bytesOf(raw, 2) ?? Buffer.alloc(0));
  const spec: JsonObject = { audiences: specFields.filter((f) => f.no === 1 && f.bytes).map((f) => (f.bytes as Buffer).toString('utf8')) };
  const exp = specFields.find((f) => f.no === 4 && f.varint !== undefined);
  if (exp) spec.expirationSeconds = Number(BigInt.asIntN(64, exp.varint as bigint));
  const ref = bytesOf(specFields, 3);
  if (ref) {
    // BoundObjectReference: kind=1, apiVersion=2, name=3, uid=4.
    const r = fields(ref);
    spec.boundObjectRef = { kind: stringOf(r, 1) ?? '', apiVersion: stringOf(r, 2) ?? '', name: stringOf(r, 3) ?? '', uid: stringOf(r, 4) ?? '' };
  }
  out.spec = spec;
  return out;
}

interface Field {
  no: number;
  varint?: bigint;
  bytes?: Buffer;
}

/** The wire format's fields, in order (varint, 64-bit, length-delimited, 32-bit); anything malformed is a 400. */
function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (pos >= buf.length) throw malformed();
      const b = buf[pos++] as number;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
    }
    throw malformed();
  };
  while (pos < buf.length) {
    const key = Number(varint());
    const no = key >>> 3;
    switch (key & 7) {
      case 0:
        out.push({ no, varint: varint() });
        break;
      case 1:
        pos += 8;
        break;
      case 2: {
        const len = Number(varint());
        if (pos + len > buf.length) throw malformed();
        out.push({ no, bytes: buf.subarray(pos, pos + len) });
        pos += len;
        break;
      }
      case 5:
        pos += 4;
        break;
      default:
        throw malformed();
    }
    if (pos > buf.length) throw malformed();
  }
  return out;
}

function bytesOf(fs: readonly Field[], no: number): Buffer | undefined {
  let last: Buffer | undefined;
  for (const f of fs) if (f.no === no && f.bytes) last = f.bytes;
  return last;
}

function stringOf(fs: readonly Field[], no: number): string | undefined {
  return bytesOf(fs, no)?.toString('utf8');
}

function malformed(): Error {
  return badRequest('the object provided is unrecognized: proto: illegal wireType or truncated message');
}
