/**
 * The import graph, checked in CI (`npm run check:imports`, part of `npm test`) by
 * dependency-cruiser: no circular imports, and folders layered so imports point down toward
 * `src/model/` (ARCHITECTURE §2). A folder may import itself and the folders listed below it:
 *
 *   model < store < observability < destinations < config < kommo < sync < queue < http < runtime < demo < cli
 *
 * (web/ holds static assets; main.ts is the CLI entry.) Type-only imports count too.
 */
const LAYERS = ['model', 'store', 'observability', 'destinations', 'config', 'kommo', 'sync', 'queue', 'http', 'runtime', 'demo', 'cli'];

const layerRules = LAYERS.map((name, i) => ({
  name: `layer-${name}`,
  comment: `src/${name}/ may import only ${LAYERS.slice(0, i + 1).join(', ')} (imports point down toward model/)`,
  severity: 'error',
  from: { path: `^src/${name}/` },
  to: {
    path: '^src/',
    pathNot: [`^src/(${LAYERS.slice(0, i + 1).join('|')})/`],
  },
}));

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'Circular imports make start-up order and tests fragile: break the cycle by moving the shared piece down.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'model-imports-nothing-of-ours',
      comment: 'src/model/ is the ground floor: zod and Node built-ins only.',
      severity: 'error',
      from: { path: '^src/model/' },
      to: { path: '^src/(?!model/)' },
    },
    ...layerRules,
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '\\.test\\.ts$' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
