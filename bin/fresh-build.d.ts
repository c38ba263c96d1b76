/** Whether dist/ is at least as new as every file in src/ (`root`: the package root, a file: URL ending in `/`). */
export function compiledBuildIsFresh(root: URL): boolean;
