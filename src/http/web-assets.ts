/**
 * The dashboard's browser code: src/web/app (Preact + uPlot, TypeScript), bundled by esbuild into
 * one script and one stylesheet. `npm run build` writes them to dist/web/assets (build-web.ts),
 * and a compiled service serves those files. Running from src/ (an edited checkout, tests), there
 * is no prebuilt bundle: it is built in memory on first request, so the page always matches the
 * code next to it. esbuild is there in both cases (tsx, which runs src/, depends on it).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface Asset {
  body: Buffer;
  type: string;
}

/** src/http -> src/web/app; dist/http -> src/web/app too (both are two levels below the root). */
const ENTRY = fileURLToPath(new URL('../../src/web/app/main.tsx', import.meta.url));
/** dist/web/assets next to the compiled code (src/web/assets does not exist). */
const PREBUILT = fileURLToPath(new URL('../web/assets/', import.meta.url));

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

function typeOf(name: string): string {
  return TYPES[name.slice(name.lastIndexOf('.'))] ?? 'application/octet-stream';
}

/** Bundles the app; writes to `outdir` when given, else returns the files. */
export async function bundleDashboard(outdir?: string): Promise<Map<string, Asset>> {
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    entryPoints: { app: ENTRY },
    bundle: true,
    format: 'esm',
    target: ['es2020'],
    minify: true,
    sourcemap: false,
    jsx: 'automatic',
    jsxImportSource: 'preact',
    outdir: outdir ?? 'assets',
    write: outdir !== undefined,
    logLevel: 'silent',
    legalComments: 'none',
  });
  const out = new Map<string, Asset>();
  if (outdir === undefined) {
    for (const f of result.outputFiles ?? []) {
      const name = f.path.slice(f.path.lastIndexOf('/') + 1);
      out.set(name, { body: Buffer.from(f.contents), type: typeOf(name) });
    }
  }
  return out;
}

let loading: Promise<Map<string, Asset>> | null = null;

/** The bundle: prebuilt files when there are some, else built once per process. */
export function dashboardAssets(): Promise<Map<string, Asset>> {
  loading ??= (async () => {
    if (existsSync(PREBUILT)) {
      const out = new Map<string, Asset>();
      for (const name of readdirSync(PREBUILT)) out.set(name, { body: readFileSync(`${PREBUILT}/${name}`), type: typeOf(name) });
      if (out.has('app.js')) return out;
    }
    return bundleDashboard();
  })().catch((err: unknown) => {
    loading = null;
    throw err;
  });
  return loading;
}
