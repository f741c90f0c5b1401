import { describe, expect, it } from 'vitest';
import { objectKey, splitKey, Store, type KubeObject } from '../../src/kube/store.js';

interface Pod extends KubeObject {
  spec?: { nodeName?: string };
  status?: { podIP?: string };
}

function pod(name: string, uid: string, ip?: string, ns = 'default'): Pod {
  return { metadata: { name, namespace: ns, uid, resourceVersion: '1' }, status: ip ? { podIP: ip } : {} };
}

const byIP = (p: Pod): string[] => (p.status?.podIP ? [p.status.podIP] : []);

describe('Store', () => {
  it('keys namespaced objects as namespace/name and cluster-scoped ones by name', () => {
    expect(objectKey(pod('p', 'u'))).toBe('default/p');
    expect(objectKey({ metadata: { name: 'node-a' } })).toBe('node-a');
    expect(splitKey('ns/p')).toEqual({ namespace: 'ns', name: 'p' });
    expect(splitKey('node-a')).toEqual({ name: 'node-a' });
    expect(() => objectKey({ metadata: {} })).toThrow();
  });

  it('finds objects by a caller-defined index and follows changes of the indexed value', () => {
    const s = new Store<Pod>({ podIP: byIP });
    s.upsert(pod('a', 'u1', '10.0.0.1'));
    s.upsert(pod('b', 'u2', '10.0.0.2'));
    expect(s.byIndex('podIP', '10.0.0.1').map((p) => p.metadata?.name)).toEqual(['a']);
    // the IP moves from a to b: the old entry must be gone
    s.upsert(pod('a', 'u1'));
    s.upsert(pod('b', 'u2', '10.0.0.1'));
    expect(s.byIndex('podIP', '10.0.0.1').map((p) => p.metadata?.name)).toEqual(['b']);
    expect(s.byIndex('podIP', '10.0.0.2')).toEqual([]);
    expect(s.indexValues('podIP')).toEqual(['10.0.0.1']);
    s.delete('default/b');
    expect(s.byIndex('podIP', '10.0.0.1')).toEqual([]);
    expect(() => s.byIndex('nope', 'x')).toThrow(/unknown index/);
  });

  it('keeps one object under several index values and drops entries of a removed object', () => {
    const s = new Store<KubeObject & { spec?: { ids?: string[] } }>({ id: (o) => o.spec?.ids ?? [] });
    s.upsert({ metadata: { name: 'x', uid: '1' }, spec: { ids: ['i1', 'i2', 'i1'] } });
    expect(s.byIndex('id', 'i1')).toHaveLength(1);
    expect(s.byIndex('id', 'i2')).toHaveLength(1);
    s.delete('x');
    expect(s.indexValues('id')).toEqual([]);
  });

  it('reports an upsert under the same name with a new uid as a replacement', () => {
    const s = new Store<Pod>();
    expect(s.upsert(pod('a', 'u1')).kind).toBe('added');
    const upd = s.upsert({ ...pod('a', 'u1'), metadata: { ...pod('a', 'u1').metadata, resourceVersion: '2' } });
    expect(upd.kind).toBe('updated');
    const rep = s.upsert(pod('a', 'u2'));
    expect(rep.kind).toBe('replaced');
    if (rep.kind === 'replaced') expect(rep.previous.metadata?.uid).toBe('u1');
    expect(s.get('default/a')?.metadata?.uid).toBe('u2');
  });

  it('ignores a delete for an older incarnation of the same name', () => {
    const s = new Store<Pod>();
    s.upsert(pod('a', 'u2'));
    expect(s.delete('default/a', 'u1')).toBeUndefined();
    expect(s.has('default/a')).toBe(true);
    expect(s.delete('default/a', 'u2')?.metadata?.uid).toBe('u2');
    expect(s.size).toBe(0);
  });

  it('survives an index function that throws on a malformed object', () => {
    const s = new Store<Pod>({
      bad: (p) => {
        if (!p.status) throw new Error('no status');
        return [p.status.podIP ?? ''];
      },
    });
    s.upsert({ metadata: { name: 'x', namespace: 'n' } });
    s.upsert(pod('y', 'u', '1.2.3.4', 'n'));
    expect(s.list()).toHaveLength(2);
    expect(s.byIndex('bad', '1.2.3.4')).toHaveLength(1);
    expect(s.getByName('n', 'x')).toBeDefined();
  });
});

describe('Store of views', () => {
  interface View {
    readonly name: string;
    readonly ip: string;
  }

  it('keeps a view under a key with the uid and resourceVersion of the object it came from', () => {
    const s = new Store<View>({ byIP: (v) => [v.ip] });
    expect(s.set('ns/a', { name: 'a', ip: '10.0.0.1' }, { uid: 'u1', resourceVersion: '5' }).kind).toBe('added');
    expect(s.get('ns/a')).toEqual({ name: 'a', ip: '10.0.0.1' });
    expect(s.meta('ns/a')).toEqual({ uid: 'u1', resourceVersion: '5' });
    expect(s.byIndex('byIP', '10.0.0.1').map((v) => v.name)).toEqual(['a']);
    expect(s.keysByIndex('byIP', '10.0.0.1')).toEqual(['ns/a']);
    const upd = s.set('ns/a', { name: 'a', ip: '10.0.0.2' }, { uid: 'u1', resourceVersion: '6' });
    expect(upd).toEqual({ kind: 'updated', previous: { name: 'a', ip: '10.0.0.1' } });
    expect(s.byIndex('byIP', '10.0.0.1')).toEqual([]);
    expect(s.set('ns/a', { name: 'a', ip: '10.0.0.2' }, { uid: 'u2', resourceVersion: '7' }).kind).toBe('replaced');
    expect([...s.values()]).toEqual([{ name: 'a', ip: '10.0.0.2' }]);
    expect([...s.entries()].map(([k]) => k)).toEqual(['ns/a']);
    const seen: string[] = [];
    s.forEach((v, k) => seen.push(`${k}=${v.ip}`));
    expect(seen).toEqual(['ns/a=10.0.0.2']);
    expect(s.delete('ns/a', 'u1')).toBeUndefined();
    expect(s.delete('ns/a', 'u2')).toEqual({ name: 'a', ip: '10.0.0.2' });
    expect(s.meta('ns/a')).toBeUndefined();
    expect(s.indexValues('byIP')).toEqual([]);
  });
});
