// The API emulator's patch semantics on a pod object: strategic merge (lists merged by their patch keys, $patch: delete)
// against a merge patch, which replaces lists wholesale. (Through HTTP a pod's spec is immutable, so the semantics are
// pinned here; test/integration/apiserver.test.ts covers what a pod update may change.)

import { describe, expect, it } from 'vitest';
import type { JsonObject } from '../../src/sandbox/apiserver/json.js';
import { applyPatch } from '../../src/sandbox/apiserver/patch.js';

const POD = {
  metadata: { name: 'pp', labels: { a: '1', b: '2' } },
  spec: {
    containers: [
      { name: 'app', image: 'app:1', env: [{ name: 'X', value: '1' }, { name: 'Y', value: '2' }], ports: [{ containerPort: 80 }] },
      { name: 'side', image: 'side:1' },
    ],
  },
} as unknown as JsonObject;

describe('pod patches', () => {
  it('merges containers by name, env by name and ports by containerPort, and honours $patch: delete', () => {
    const patched = applyPatch('strategic', POD, {
      spec: {
        containers: [
          { name: 'app', image: 'app:2', env: [{ name: 'Y', value: '22' }, { name: 'Z', value: '3' }, { name: 'X', $patch: 'delete' }], ports: [{ containerPort: 443 }] },
          { name: 'side', $patch: 'delete' },
        ],
      },
    }) as { spec: { containers: { name: string; image: string; env: unknown[]; ports: { containerPort: number }[] }[] } };
    expect(patched.spec.containers).toHaveLength(1);
    const app = patched.spec.containers[0]!;
    expect(app.image).toBe('app:2');
    expect(app.env).toEqual([{ name: 'Y', value: '22' }, { name: 'Z', value: '3' }]);
    expect(app.ports.map((p) => p.containerPort)).toEqual([80, 443]);
  });

  it('replaces lists wholesale with a merge patch, and removes keys set to null', () => {
    const patched = applyPatch('merge', POD, { metadata: { labels: { b: null, c: '3' } }, spec: { containers: [{ name: 'only', image: 'o' }] } }) as {
      metadata: { labels: Record<string, string> };
      spec: { containers: { name: string }[] };
    };
    expect(patched.spec.containers.map((c) => c.name)).toEqual(['only']);
    expect(patched.metadata.labels).toEqual({ a: '1', c: '3' });
  });

  it('leaves the stored object untouched', () => {
    const before = JSON.stringify(POD);
    applyPatch('strategic', POD, { spec: { containers: [{ name: 'app', image: 'changed' }] } });
    expect(JSON.stringify(POD)).toBe(before);
  });
});
