import { describe, expect, it } from 'vitest';
import { coalesceValues, renderTemplate } from '../helpers/helm-render.js';

// The chart tests' renderer must behave as Go's text/template with Helm's functions where our charts rely on it.
describe('test renderer: Go template semantics the chart tests rely on', () => {
  const v = { Values: { a: { b: 'x' }, n: 2, list: ['p', 'q'], map: { z: 1, a: 2 }, empty: {}, f: false, s: 'false' }, Release: { Name: 'r' } };

  it('trims whitespace at {{- and -}} only, and drops comments', () => {
    expect(renderTemplate('a  \n  {{- .Values.a.b -}}  \n b', v)).toBe('axb');
    expect(renderTemplate('a {{ .Values.a.b }} b{{/* note */}}', v)).toBe('a x b');
    expect(renderTemplate('a\n{{- /* note */}}\nb', v)).toBe('a\nb');
  });

  it('reads a missing key as nil (printed empty) and fails on a field of nil', () => {
    expect(renderTemplate('[{{ .Values.missing }}]', v)).toBe('[]');
    expect(() => renderTemplate('{{ .Values.missing.deeper }}', v)).toThrow(/nil pointer evaluating interface \{\}\.deeper/);
  });

  it('treats false, 0, "", empty maps and lists as false, and the string "false" as true', () => {
    expect(renderTemplate('{{ if .Values.f }}t{{ else }}f{{ end }}{{ if .Values.s }}t{{ end }}{{ if .Values.empty }}t{{ else if .Values.n }}n{{ end }}', v)).toBe('ftn');
  });

  it('ranges over maps in key order and over lists, with variables scoped to the block', () => {
    expect(renderTemplate('{{ range $k, $x := .Values.map }}{{ $k }}={{ $x }};{{ end }}', v)).toBe('a=2;z=1;');
    expect(renderTemplate('{{ range $i, $x := .Values.list }}{{ $i }}{{ $x }}{{ $.Release.Name }}{{ end }}', v)).toBe('0pr1qr');
    expect(renderTemplate('{{ range .Values.nothing }}x{{ else }}none{{ end }}', v)).toBe('none');
    expect(renderTemplate('{{ $x := "a" }}{{ if true }}{{ $x = "b" }}{{ $y := 1 }}{{ end }}{{ $x }}', v)).toBe('b');
  });

  it('pipes the previous value as the last argument, evaluates parentheses, and distinguishes (f x).Field', () => {
    expect(renderTemplate('{{ .Values.a.b | printf "%s-%s" "p" | quote }}', v)).toBe('"p-x"');
    expect(renderTemplate('{{ and (eq .Values.n 2) .Values.a.b }}', v)).toBe('x');
    expect(renderTemplate('{{ (dict "k" "v").k }}', v)).toBe('v');
  });

  it('runs defines through include and template with their own $', () => {
    const partials = '{{- define "n" -}}{{ .Release.Name }}-{{ $.Values.a.b }}{{- end -}}';
    expect(renderTemplate('{{ include "n" . | upper }} {{ template "n" . }}', v, partials)).toBe('R-X r-x');
  });

  it('has the Sprig/Helm functions the charts use, with their edge cases', () => {
    expect(renderTemplate('{{ default "d" "" }} {{ default "d" 0 }} {{ default "d" "v" }} {{ "abcdef" | trunc 3 }} {{ "x-" | trimSuffix "-" }}', v)).toBe('d d v abc x');
    expect(renderTemplate('{{ toYaml .Values.map | nindent 2 }}', v)).toBe('\n  a: 2\n  z: 1');
    expect(renderTemplate('{{ (fromJson "{\\"name\\":\\"s\\"}").name }} {{ hasKey (fromJson "nope") "Error" }}', v)).toBe('s true');
    expect(renderTemplate('{{ semverCompare ">=1.21-0" "v1.29.0" }} {{ semverCompare "<= 1.6.1-0" "v1.8.17" }}', v)).toBe('true false');
    expect(renderTemplate('{{ int "1" }} {{ toString true }} {{ kindIs "map" .Values.map }} {{ kindIs "string" .Values.s }}', v)).toBe('1 true true true');
    expect(() => renderTemplate('{{ required "need it" .Values.missing }}', v)).toThrow('need it');
    expect(() => renderTemplate('{{ fail "stop here" }}', v)).toThrow('stop here');
    expect(() => renderTemplate('{{ nosuchfunction 1 }}', v)).toThrow(/function "nosuchfunction" not defined/);
  });

  it("coalesces values as Helm: maps merge, lists and scalars replace, null deletes", () => {
    expect(coalesceValues({ a: { x: 1, y: 2 }, l: [1, 2], d: 'keep' }, { a: { y: 3 }, l: [9], d: null })).toEqual({ a: { x: 1, y: 3 }, l: [9] });
  });
});
