/**
 * `npm run build` step: bundles the dashboard into dist/web/assets (see web-assets.ts).
 * Run as `node dist/http/build-web.js` after tsc.
 */
import { fileURLToPath } from 'node:url';
import { bundleDashboard } from './web-assets.js';

const outdir = fileURLToPath(new URL('../web/assets/', import.meta.url));
await bundleDashboard(outdir);
process.stdout.write(`dashboard bundled into ${outdir}\n`);
